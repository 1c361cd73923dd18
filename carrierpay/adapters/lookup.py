"""Number lookup (HLR/MNP): ask a carrier which network serves a number now, and record the answer.

A ported number keeps its original prefix, so its range names the wrong carrier. A carrier spec's
`lookup` operation asks the operator's HLR/MNP database; `adapter.record_number_lookup` keeps the
answer (MCC/MNC, mapped to the carrier with that network) for the operation's `ttl_s`, and routing
(`cp.route_msisdn`, db/procedures/070_routing.sql) bills the number there until the answer expires.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import psycopg

from carrierpay import queries
from carrierpay.adapters.registry import build_connector
from carrierpay.adapters.secrets import Secrets

DEFAULT_TTL_S = 86400


class LookupFailed(RuntimeError):
    """The carrier gave no network for the number (or offers no lookup)."""


async def lookup_number(database_url: str, carrier: str, msisdn: str, *,
                        secrets: Secrets | Mapping[str, str] | None = None, base_url: str | None = None,
                        connector: Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]] | None = None,
                        ) -> dict[str, Any]:
    """Ask `carrier` which network serves `msisdn` and record the answer; returns what was recorded
    ({msisdn, carrier, mcc, mnc, expires_at}). Raises LookupFailed when there is no answer to record."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        row = await (await conn.execute(queries.CARRIER_SPEC, {"carrier": carrier})).fetchone()
        if row is None:
            raise LookupFailed(f"unknown carrier {carrier!r}")
        spec = row[0]
        operation = (spec.get("operations") or {}).get("lookup")
        if operation is None:
            raise LookupFailed(f"carrier {carrier} offers no number lookup (operations.lookup)")
        call = {"call_id": None, "operation": "lookup", "carrier": carrier, "msisdn": msisdn,
                "correlator": f"lookup-{msisdn.lstrip('+')}", "attempt": 1}
        if connector is None:
            shared = Secrets.of(secrets)
            built = build_connector(spec, secrets=shared, base_url=base_url)
            try:
                result = await built.execute(call)
            finally:
                await built.close()
        else:
            result = await connector(call)
        if result.get("outcome") != "succeeded" or not result.get("mcc") or not result.get("mnc"):
            raise LookupFailed(f"{carrier} did not say which network serves the number: "
                               f"{result.get('outcome')}/{result.get('reason')} {result.get('carrier_message') or ''}")
        cur = await conn.execute(queries.RECORD_NUMBER_LOOKUP, {
            "msisdn": msisdn, "mcc": result["mcc"], "mnc": result["mnc"],
            "ttl_s": int(operation.get("ttl_s") or DEFAULT_TTL_S)})
        return (await cur.fetchone())[0]
