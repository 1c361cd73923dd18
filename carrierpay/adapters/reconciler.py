"""`carrierpay reconcile run`: settles carrier calls whose outcome is unknown or still awaited.

Each tick:

1. `adapter.expire_leases`: calls held by a dead or stalled adapter. A call that may be sent again
   (`cp.may_send_again`: its carrier deduplicates our correlator, or it changes nothing) goes back
   to the queue; any other may have reached the carrier and becomes `unknown`.
   `adapter.expire_reservations`: a two-step charge still queued when its confirmation window closes
   is given up and its reservation released (one call of the carrier's cancel operation); a release
   still queued after the carrier's own expiry is not sent.
2. per carrier, `adapter.claim_reconciliations` hands out the unsettled calls that are due (the
   database pushes each one's next attempt out on the back-off: 5 minutes, 1 hour, then daily),
   each with its `route`, decided by `cp.settlement_route` in db/procedures/250_adapter.sql. This
   module only carries the route out:

   - `status_query`: ask the carrier about the original (its correlator and carrier reference);
   - `result_file`: download the carrier's result files, which settle every listed call at once;
   - `resend`: the SAME call again (same correlator), which the carrier deduplicates;
   - `close`: record `failed/unknown` (nothing to recover; the subscriber can ask again);
   - `wait`: nothing now; a late callback settles it.

Definite answers go back through `adapter.complete_calls` with the ORIGINAL call id, so the
procedure moves unknown → succeeded | failed and the ledger follows. An answer that settles
nothing (throttled, transient, unreachable, unreadable, not yet in a report) leaves the call for its
next turn. A call that three turns have not settled is listed in `report.calls_needing_operator`
for an operator to settle (`admin.settle_call`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import psycopg

from carrierpay import metrics, queries, vocabulary
from carrierpay.adapters.daemon import ConnectorFactory, call_safely, close_connector, complete_results
from carrierpay.adapters.reports import ReportNotReady, ReportUnavailable, ReportUnreadable
from carrierpay.lifecycle import run_until_stopped, sleep_or_stop

log = logging.getLogger("carrierpay.reconciler")

# A failure with one of these reasons says our status query failed, not the original call
# (cp.failure_reason.definite is false).
NOT_DEFINITE = vocabulary.reasons(definite=False)


@dataclass
class TickReport:
    leases: dict = field(default_factory=dict)
    reservations: dict = field(default_factory=dict)
    claimed: int = 0
    settled: int = 0
    by_route: dict[str, int] = field(default_factory=dict)

    def count(self, route: str, n: int = 1) -> None:
        self.by_route[route] = self.by_route.get(route, 0) + n


def _definite(result: Mapping[str, Any]) -> bool:
    if result.get("outcome") == "succeeded":
        return True
    return result.get("outcome") == "failed" and (result.get("reason") or "rejected") not in NOT_DEFINITE


def _settlement(call: Mapping[str, Any], answer: Mapping[str, Any], how: str) -> dict[str, Any]:
    """The completion document for the ORIGINAL call from a definite answer about it."""
    outcome = answer["outcome"]
    result = {
        "call_id": call["call_id"],
        "outcome": outcome,
        "reason": None if outcome == "succeeded" else (answer.get("reason") or "rejected"),
        "carrier_code": answer.get("carrier_code"),
        "carrier_message": f"reconciled by {how}" + (f": {answer['carrier_message']}"
                                                     if answer.get("carrier_message") else ""),
        "carrier_ref": answer.get("carrier_ref") or call.get("carrier_ref"),
        "latency_ms": answer.get("latency_ms"),
        "request": answer.get("request"),
        "response": answer.get("response"),
    }
    if outcome == "succeeded":
        result["amount_minor"] = answer.get("amount_minor") or call.get("amount_minor")
    return result


class Reconciler:
    def __init__(
        self,
        url: str,
        connector_factory: ConnectorFactory,
        *,
        carriers: list[str] | None = None,
        batch: int = 200,
        interval: float = 5.0,
    ) -> None:
        self.url = url
        self.connector_factory = connector_factory
        self.only = set(carriers or [])
        self.batch = batch
        self.interval = interval
        self.connectors: dict[str, Any] = {}
        self.specs: dict[str, dict] = {}

    async def _connector(self, code: str, spec: dict) -> Any | None:
        if code not in self.connectors:
            try:
                self.connectors[code] = await self.connector_factory(code, spec)
            except Exception as exc:  # one unusable carrier must not stop the others
                log.error("carrier %s cannot be reconciled: %s: %s", code, type(exc).__name__, exc)
                return None
        return self.connectors[code]

    async def close(self) -> None:
        for connector in self.connectors.values():
            await close_connector(connector)
        self.connectors.clear()

    async def tick(self, conn: psycopg.AsyncConnection) -> TickReport:
        report = TickReport()
        cur = await conn.execute(queries.EXPIRE_LEASES, {"limit": 10000})
        report.leases = (await cur.fetchone())[0]
        cur = await conn.execute(queries.EXPIRE_RESERVATIONS, {"limit": 10000})
        report.reservations = (await cur.fetchone())[0]
        cur = await conn.execute(queries.ALL_CARRIERS)
        for code, spec in await cur.fetchall():
            if self.only and code not in self.only:
                continue
            if spec.get("transport") == "smpp":
                # Premium MT waits for its delivery receipt: too long a wait makes it unknown, and
                # receipts that arrived before their submit response are matched again.
                await conn.execute(queries.EXPIRE_AWAITING, {"carrier": code, "limit": 10000})
                await conn.execute(queries.REMATCH_CALLBACKS, {"carrier": code, "limit": 10000})
            while True:
                cur = await conn.execute(queries.CLAIM_RECONCILIATIONS, {"carrier": code, "limit": self.batch})
                calls = [row[0] for row in await cur.fetchall()]
                if not calls:
                    break
                report.claimed += len(calls)
                connector = await self._connector(code, spec)
                if connector is None:
                    break  # claimed calls come back on the back-off
                settled = await self.settle(conn, code, spec, connector, calls, report)
                report.settled += settled
                metrics.RECONCILED.inc(settled)
                if len(calls) < self.batch:
                    break
        if report.claimed or any(report.leases.values()) or any(report.reservations.values()):
            log.info("reconcile: leases %s; reservations %s; claimed %d, settled %d (%s)", report.leases,
                     report.reservations, report.claimed,
                     report.settled, " ".join(f"{k}={v}" for k, v in sorted(report.by_route.items())))
        return report

    async def settle(self, conn: psycopg.AsyncConnection, code: str, spec: dict, connector: Any,
                     calls: list[dict], report: TickReport) -> int:
        routes: dict[str, list[dict]] = {}
        for call in calls:
            routes.setdefault(call["route"], []).append(call)
        results: list[dict] = []
        for route, group in routes.items():
            report.count(route, len(group))
        if "status_query" in routes:
            answers = await asyncio.gather(*(call_safely(connector, self._status_call(call))
                                             for call in routes["status_query"]))
            results += [_settlement(call, answer, "status query")
                        for call, answer in zip(routes["status_query"], answers, strict=True) if _definite(answer)]
        if "resend" in routes:
            answers = await asyncio.gather(*(call_safely(connector, dict(call)) for call in routes["resend"]))
            results += [_settlement(call, answer, "repeating the deduplicated call")
                        for call, answer in zip(routes["resend"], answers, strict=True) if _definite(answer)]
        for call in routes.get("close", []):
            results.append({"call_id": call["call_id"], "outcome": "failed", "reason": "unknown",
                            "carrier_message": "outcome unknown and the operation cannot be repeated or queried"})
        for call in routes.get("wait", []):
            log.debug("%s call %s waits for a late callback", code, call["call_id"])
        settled = 0
        if results:
            await complete_results(conn, results)
            settled += len(results)
        if "result_file" in routes:
            settled += await self._settle_by_report(conn, code, connector, routes["result_file"])
        return settled

    @staticmethod
    def _status_call(call: Mapping[str, Any]) -> dict[str, Any]:
        original = {"correlator": call["correlator"], "carrier_ref": call.get("carrier_ref"),
                    "amount_minor": call.get("amount_minor")}
        return {**call, "operation": "status", "original": original}

    async def _settle_by_report(self, conn: psycopg.AsyncConnection, code: str, connector: Any,
                                calls: list[dict]) -> int:
        fetch = getattr(connector, "fetch_report", None)
        if fetch is None:
            return 0
        cur = await conn.execute(queries.CALL_LOCAL_DATES, {"call_ids": [c["call_id"] for c in calls]})
        days: list[date] = sorted(row[0] for row in await cur.fetchall())
        settled = 0
        for day in days:
            try:
                rows = await fetch(date=day.isoformat())
            except (ReportNotReady, ReportUnavailable, ReportUnreadable) as exc:
                log.info("%s report %s: %s", code, day, exc)
                continue
            definite = {row["correlator"]: row for row in rows if _definite(row)}
            if not definite:
                continue
            cur = await conn.execute(queries.UNSETTLED_BY_CORRELATOR,
                                     {"carrier": code, "correlators": list(definite)})
            matched = await cur.fetchall()
            results = [_settlement({"call_id": call_id}, definite[correlator], f"report {day}")
                       for call_id, correlator, _ in matched]
            for result in results:
                result["request"], result["response"] = None, {"report": day.isoformat()}
            if results:
                await complete_results(conn, results)
                settled += len(results)
        return settled

    async def run(self, stop: asyncio.Event | None = None, *, once: bool = False) -> None:
        stop = stop or asyncio.Event()

        async def body(stop: asyncio.Event) -> None:
            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                while not stop.is_set():
                    await self.tick(conn)
                    if once:
                        stop.set()
                        return
                    await sleep_or_stop(stop, self.interval)

        try:
            await run_until_stopped(body, stop, name="reconciler")
        finally:
            await self.close()
