"""Result files: download a carrier's report (CSV or XML) and read one result per correlator.

Carriers of the `report` pattern only accept requests; what happened is published later in a
file. The reconciler downloads it with `fetch_report` (in carrierpay/adapters/http.py, which imports
this module) and settles every pending or unknown call the file names. Rows are mapped with the
spec's `reports.results`, the same rules as elsewhere.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from carrierpay.adapters.encodings import UnreadableResponse, parse_document, select_records, xml_record_values
from carrierpay.adapters.money import AmountError
from carrierpay.adapters.results import decide
from carrierpay.adapters.spec import CarrierSpec


class ReportNotReady(RuntimeError):
    """The carrier has not published this report yet (HTTP 404); try again later."""


class ReportUnavailable(RuntimeError):
    """The download failed (connection, auth, server error); nothing can be concluded from it."""


class ReportUnreadable(ValueError):
    """The file is not in the promised format; nothing can be concluded from it."""


def parse_report(spec: CarrierSpec, body: bytes) -> list[dict[str, Any]]:
    """One result per row: correlator, outcome, reason, carrier_code, carrier_ref, amount_minor, fields."""
    config = spec.data["reports"]
    columns: Mapping[str, str] = config["columns"]
    rows: list[dict[str, Any]] = []
    if config["format"] == "csv":
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ReportUnreadable(f"report is not UTF-8 text: {exc}") from exc
        reader = csv.DictReader(io.StringIO(text), delimiter=config.get("delimiter", ","))
        missing = [column for column in columns.values() if column not in (reader.fieldnames or [])]
        if missing:
            raise ReportUnreadable(f"report lacks columns {', '.join(missing)} (has {reader.fieldnames})")
        for record in reader:
            rows.append({name: (record.get(column) or "").strip() or None for name, column in columns.items()})
    else:
        try:
            document = parse_document("xml", body)
        except UnreadableResponse as exc:
            raise ReportUnreadable(str(exc)) from exc
        namespaces = config.get("namespaces")
        for record in select_records(document, config["record_xpath"], namespaces):
            rows.append(xml_record_values(record, columns, namespaces))

    results = []
    for fields in rows:
        if not fields.get("correlator"):
            continue
        decision = decide([("reports.results", config.get("results") or [])], fields)
        try:
            amount_minor = spec.minor_units(fields.get("amount"))
        except AmountError as exc:
                raise ReportUnreadable(f"row {fields['correlator']}: {exc}") from exc
        results.append(
            {
                "correlator": str(fields["correlator"]),
                "outcome": decision.outcome,
                "reason": decision.reason,
                "carrier_code": None if fields.get("code") is None else str(fields["code"]),
                "carrier_message": fields.get("message"),
                "carrier_ref": fields.get("carrier_ref"),
                "amount_minor": amount_minor,
                "fields": fields,
            }
        )
    return results

