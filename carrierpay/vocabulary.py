"""The regulation rule keys and the failure reasons, as `cp.rule_key` and `cp.failure_reason` hold them.

Both tables are filled from the JSON in `db/procedures/030_vocabulary.sql`; this module reads that same
text, so the carrier spec schemas, the spec validator (which runs without a database) and the
reconciler agree with the SQL by construction: a reason or key is added in that one file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from carrierpay.paths import sql_root

SOURCE = "procedures/030_vocabulary.sql"

# The JSON shape each rule type takes, for the carrier spec schema's `rules` section; the SQL side
# (cp.rule_value_fits) checks the same shapes and a little more.
RULE_TYPE_SCHEMAS: dict[str, dict[str, Any]] = {
    "boolean": {"type": "boolean"},
    "integer": {"type": "integer", "minimum": 0, "maximum": 999_999_999},
    "minor": {"type": "integer", "minimum": 0},
    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
    "window": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]|24):[0-5][0-9]$"},
    "quiet_hours": {
        "type": "array",
        "items": {
            "type": "object", "required": ["days", "from", "to"],
            "properties": {
                "days": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 7}},
                "from": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
                "to": {"type": "string", "pattern": "^([01][0-9]|2[0-3]|24):[0-5][0-9]$"},
            },
        },
    },
}


@dataclass(frozen=True)
class RuleKey:
    key: str
    type: str
    default: Any
    doc: str


@dataclass(frozen=True)
class FailureReason:
    reason: str
    permanent: bool
    definite: bool
    nothing_sent: bool
    steps_down: bool
    in_result_map: bool
    in_smpp_map: bool
    doc: str


def _section(text: str, tag: str) -> list[dict[str, Any]]:
    found = re.search(rf"jsonb_to_recordset\(\${tag}\$(.*?)\${tag}\$", text, re.S)
    if found is None:
        raise ValueError(f"{SOURCE} has no ${tag}$ section")
    return json.loads(found.group(1))


@cache
def _source() -> str:
    return (sql_root() / SOURCE).read_text("utf-8")


@cache
def rule_keys() -> tuple[RuleKey, ...]:
    return tuple(RuleKey(**row) for row in _section(_source(), "rule_keys"))


@cache
def failure_reasons() -> tuple[FailureReason, ...]:
    return tuple(FailureReason(**row) for row in _section(_source(), "failure_reasons"))


def reasons(**flags: bool) -> frozenset[str]:
    """The reasons whose flags have the given values, e.g. `reasons(definite=False)`."""
    return frozenset(r.reason for r in failure_reasons() if all(getattr(r, k) == v for k, v in flags.items()))


def rules_schema() -> dict[str, Any]:
    """JSON Schema of a carrier spec's `rules`: only the known keys, each with its type's shape."""
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {k.key: {**RULE_TYPE_SCHEMAS[k.type], "description": k.doc} for k in rule_keys()},
    }
