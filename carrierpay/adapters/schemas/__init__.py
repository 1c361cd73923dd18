"""The carrier spec schemas, completed with the vocabularies the database holds.

The failure reasons a result map or an SMPP status may give and the rule keys a carrier may
override are rows of cp.failure_reason and cp.rule_key; the JSON files leave those lists out and
`load` fills them in from the same source (carrierpay.vocabulary), so the schemas cannot drift
from what the SQL accepts.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from carrierpay import vocabulary


def load(name: str) -> dict[str, Any]:
    """The schema document `name` (carrier.schema.json or smpp.schema.json), vocabularies filled in."""
    document = json.loads(resources.files(__name__).joinpath(name).read_text("utf-8"))
    if name == "carrier.schema.json":
        reasons = [r.reason for r in vocabulary.failure_reasons() if r.in_result_map]
        document["$defs"]["reason"]["enum"] = [None, *reasons]
        rules = document["properties"]["rules"]
        document["properties"]["rules"] = {**vocabulary.rules_schema(), "description": rules["description"]}
    elif name == "smpp.schema.json":
        document["$defs"]["reason"]["enum"] = [r.reason for r in vocabulary.failure_reasons() if r.in_smpp_map]
    return document
