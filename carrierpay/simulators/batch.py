"""A batch-settling operator: charges and refunds are only accepted; what happened is published in a
result file (CSV, or XML) per local day, each row appearing `report_delay` after acceptance on the
simulated clock. HTTP Basic auth. A synchronous balance query is the only immediate answer.

The debit happens at acceptance; the file only reveals it later, which is exactly the situation
where a lost acceptance answer must not be followed by a blind repeat.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web

from carrierpay.simulators.base import Result, Simulator

RESULT_CODES = {
    "ok": "0",
    "insufficient_funds": "E101",
    "unknown_subscriber": "E102",
    "barred": "E103",
    "limit_exceeded": "E104",
    "not_found": "E105",
}
COLUMNS = ["txn_id", "msisdn", "type", "status", "result_code", "amount", "currency", "carrier_txn_id", "processed_at"]


@dataclass
class Accepted:
    result: Result
    accepted_at: datetime


class BatchSimulator(Simulator):
    dialect = "batch"
    txid_prefix = "BT"
    currency = "INR"
    timezone = "Asia/Kolkata"

    def __init__(
        self,
        *,
        username: str = "carrierpay",
        password: str = "batch-password",
        report_delay: timedelta = timedelta(hours=1),
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.username = username
        self.password = password
        self.report_delay = report_delay
        self.accepted: list[Accepted] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v2/charges", self.charge)
        app.router.add_post("/api/v2/refunds", self.refund)
        app.router.add_get("/api/v2/subscribers/{msisdn}/balance", self.balance_query)
        app.router.add_get("/reports/{date}.{fmt}", self.report)
        app.router.add_post("/api/v2/sms", self.send_sms)

    def authorised(self, request: web.Request) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return request.headers.get("Authorization") == expected

    @staticmethod
    def reply(http_status: int, **document: Any) -> web.Response:
        return web.json_response(document, status=http_status)

    async def _admit(self, request: web.Request,
                     kind: str) -> tuple[web.Response | None, str | None, dict[str, Any]]:
        """What every POST to this operator meets before it is read: the credentials, the latency, a fault
        that refuses it before anything happens, a JSON body. Returns (the refusal or None, the fault, the body)."""
        if not self.authorised(request):
            return self.reply(401, status="REJECTED", code="E401", message="authentication required"), None, {}
        await self.latency()
        fault = self.pre_fault(kind)
        if fault == "throttle":
            return self.reply(429, status="REJECTED", code="E429", message="TPS exceeded"), fault, {}
        if fault == "transient":
            return self.reply(503, status="REJECTED", code="E503", message="system busy, not accepted"), fault, {}
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self.reply(400, status="REJECTED", code="E400", message="body is not JSON"), fault, {}
        return None, fault, body

    async def _accept(self, request: web.Request, kind: str) -> web.StreamResponse:
        refusal, fault, body = await self._admit(request, kind)
        if refusal is not None:
            return refusal
        amount = self.minor(body.get("amount"))
        txn_id, msisdn = str(body.get("txn_id") or ""), str(body.get("msisdn") or "")
        if amount is None or not txn_id or not msisdn or body.get("currency") != self.currency:
            return self.reply(400, status="REJECTED", code="E400", message="txn_id, msisdn, amount, currency")
        repeated = self.billing.lookup(txn_id, kind) is not None
        if kind == "charge":
            result = self.billing.charge(txn_id, msisdn, amount, str(body.get("description") or ""))
        else:
            result = self.billing.refund(txn_id, msisdn, amount, body.get("original_carrier_txn_id") or None)
        if not repeated:
            self.accepted.append(Accepted(result, self.clock.now()))
        garbage = self.garbage_response(fault) if fault else None
        if garbage:
            return garbage
        await self.after_apply(fault, request, kind)
        return self.reply(202, status="ACCEPTED", txn_id=txn_id)

    async def charge(self, request: web.Request) -> web.StreamResponse:
        return await self._accept(request, "charge")

    async def refund(self, request: web.Request) -> web.StreamResponse:
        return await self._accept(request, "refund")

    async def balance_query(self, request: web.Request) -> web.Response:
        if not self.authorised(request):
            return self.reply(401, status="REJECTED", code="E401", message="authentication required")
        balance = self.billing.balance(request.match_info["msisdn"])
        if balance is None:
            return self.reply(404, status="REJECTED", code="E102", message="unknown subscriber")
        return self.reply(200, status="OK", balance=self.major(balance), currency=self.currency)

    async def send_sms(self, request: web.Request) -> web.Response:
        """SMS is immediate on this operator: JSON {txn_id, msisdn, text}; txn_id deduplicates."""
        refusal, _, body = await self._admit(request, "send_sms")
        if refusal is not None:
            return refusal
        msisdn, text = str(body.get("msisdn") or ""), str(body.get("text") or "")
        if not msisdn or not text:
            return self.reply(400, status="REJECTED", code="E400", message="msisdn and text are required")
        if self.billing.subscriber(msisdn) is None:
            return self.reply(404, status="REJECTED", code="E102", message="unknown subscriber")
        message = self.deliver_text(msisdn, text, str(body.get("sender") or ""), str(body.get("txn_id") or ""))
        return self.reply(200, status="SENT", message_id=message.message_id)

    def ready_rows(self, date: str) -> list[dict[str, str]]:
        now = self.clock.now()
        rows = []
        for accepted in self.accepted:
            local_date = accepted.accepted_at.astimezone(self.billing.zone).date().isoformat()
            if local_date != date or accepted.accepted_at + self.report_delay > now:
                continue
            transaction = accepted.result.transaction
            assert transaction is not None
            rows.append(
                {
                    "txn_id": transaction.correlator,
                    "msisdn": transaction.msisdn,
                    "type": transaction.kind.upper(),
                    "status": "SUCCESS" if accepted.result.ok else "FAILED",
                    "result_code": RESULT_CODES.get(accepted.result.code, "E199"),
                    "amount": self.major(transaction.amount_minor),
                    "currency": transaction.currency,
                    "carrier_txn_id": transaction.txid,
                    "processed_at": (accepted.accepted_at + self.report_delay).strftime("%Y-%m-%d %H:%M:%S"),
                }
            )
        return rows

    async def report(self, request: web.Request) -> web.Response:
        if not self.authorised(request):
            return self.reply(401, status="REJECTED", code="E401", message="authentication required")
        rows = self.ready_rows(request.match_info["date"])
        if not rows:
            return web.Response(status=404, text="report not yet available")
        if request.match_info["fmt"] == "xml":
            records = "".join(
                "<record>" + "".join(f"<{key}>{escape(value)}</{key}>" for key, value in row.items()) + "</record>"
                for row in rows
            )
            text = (
                f'<?xml version="1.0" encoding="UTF-8"?><report date="{request.match_info["date"]}">{records}</report>'
            )
            return web.Response(text=text, content_type="application/xml")
        lines = [",".join(COLUMNS)] + [",".join(row[column] for column in COLUMNS) for row in rows]
        return web.Response(text="\r\n".join(lines) + "\r\n", content_type="text/csv")
