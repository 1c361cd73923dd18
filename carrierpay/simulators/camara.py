"""A CAMARA Carrier Billing operator (GSMA Open Gateway): OAuth2 client credentials, one-step
`POST /payments` answered `processing`, the outcome notified later as a CloudEvent to the `sink` the
request named, presenting the `sinkCredential` the request carried (`Authorization: Bearer`).

Amounts are JSON numbers in major units (`"amount": 1.99`); a string amount is refused. A request
with a sink but no bearer sinkCredential is refused too: this operator never notifies a sink it
cannot authenticate to. Knobs: `notification_delay_s`, `notification_attempts`, `notifications_sent`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from decimal import Decimal
from typing import Any

import aiohttp
from aiohttp import web

from carrierpay.simulators.base import ExactNumber, Result, Simulator, exact_json, refusal_code

STATUS_BY_CODE = {"ok": "succeeded"}
DENIAL_REASONS = {
    "insufficient_funds": "INSUFFICIENT_BALANCE",
    "barred": "BARRED",
    "unknown_subscriber": "UNKNOWN_SUBSCRIBER",
    "limit_exceeded": "LIMIT_EXCEEDED",
}


class CamaraSimulator(Simulator):
    dialect = "camara"
    txid_prefix = "CB"
    currency = "EUR"
    timezone = "Europe/Madrid"

    def __init__(
        self,
        *,
        client_id: str = "carrierpay",
        client_secret: str = "camara-client-secret",
        token_ttl_s: float = 3600.0,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl_s = token_ttl_s
        self.tokens: dict[str, float] = {}
        self.notification_delay_s = 0.0
        self.notification_attempts = 5
        self.notifications_sent: list[dict[str, Any]] = []  # every attempt: sink, headers, event, HTTP status
        self._sinks: dict[str, tuple[str, str]] = {}  # paymentId -> (sink, bearer token)
        self._client: aiohttp.ClientSession | None = None

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/oauth/token", self.token)
        app.router.add_post("/carrier-billing/v0/payments", self.create_payment)
        app.router.add_get("/carrier-billing/v0/payments/{payment_id}", self.payment_status)

    async def stop(self) -> None:
        await super().stop()
        if self._client is not None:
            await self._client.close()

    def problem(self, status: int, code: str, message: str) -> web.Response:
        return web.json_response({"status": status, "code": code, "message": message}, status=status)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        header = request.headers.get("Authorization", "")
        supplied = (form.get("client_id"), form.get("client_secret"))
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            supplied = (user, password)
        if form.get("grant_type") != "client_credentials" or supplied != (self.client_id, self.client_secret):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = secrets.token_urlsafe(24)
        self.tokens[token] = time.monotonic() + self.token_ttl_s
        return web.json_response({"access_token": token, "token_type": "bearer", "expires_in": self.token_ttl_s})

    def authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        expiry = self.tokens.get(header[7:] if header.startswith("Bearer ") else "")
        return expiry is not None and expiry > time.monotonic()

    def payment_document(self, result: Result) -> dict[str, Any]:
        transaction = result.transaction
        assert transaction is not None
        document: dict[str, Any] = {
            "paymentId": transaction.txid,
            "clientCorrelator": transaction.correlator,
            "paymentStatus": STATUS_BY_CODE.get(result.code, "denied"),
            "amountTransaction": {"amount": ExactNumber(self.major(transaction.amount_minor)),
                                  "currency": transaction.currency},
        }
        if result.code != "ok":
            document["statusReasonCode"] = DENIAL_REASONS.get(result.code, "DENIED")
        return document

    async def create_payment(self, request: web.Request) -> web.StreamResponse:
        if not self.authorised(request):
            return self.problem(401, "UNAUTHENTICATED", "Request not authenticated")
        await self.latency()
        try:
            body = json.loads(await request.read(), parse_float=Decimal)
        except ValueError:
            return self.problem(400, "INVALID_ARGUMENT", "not JSON")
        if not isinstance(body, dict) or not body.get("clientCorrelator") or not body.get("phoneNumber"):
            return self.problem(400, "INVALID_ARGUMENT", "clientCorrelator and phoneNumber are required")
        info = (body.get("paymentAmount") or {}).get("chargingInformation") or {}
        amount = info.get("amount")
        numeric = isinstance(amount, int | Decimal) and not isinstance(amount, bool)
        amount_minor = self.minor(amount) if numeric else None
        if amount_minor is None or info.get("currency") != self.currency:
            return self.problem(400, "INVALID_ARGUMENT", "chargingInformation.amount must be a number in "
                                                         f"{self.currency}")
        sink, credential = body.get("sink"), body.get("sinkCredential") or {}
        bearer = credential.get("accessToken") if isinstance(credential, dict) else None
        if sink and not (credential.get("credentialType") == "ACCESSTOKEN" and bearer
                         and str(credential.get("accessTokenType", "")).lower() == "bearer"):
            return self.problem(400, "INVALID_CREDENTIAL", "a sink needs a bearer sinkCredential")
        fault = self.pre_fault("charge")
        if refusal := refusal_code(fault):
            return self.problem(429 if refusal == "throttled" else 503, refusal.upper(), "not applied")
        result = self.billing.charge(str(body["clientCorrelator"]), str(body["phoneNumber"]), amount_minor,
                                     str(info.get("description") or ""))
        assert result.transaction is not None
        if sink and not result.repeated:
            self._sinks[result.transaction.txid] = (str(sink), str(bearer))
            self.spawn(self.notify(result))
        garbage = self.garbage_response(fault) if fault else None
        if garbage:
            return garbage
        await self.after_apply(fault, request, "charge")
        document = {**self.payment_document(result), "paymentStatus": "processing"}
        document.pop("statusReasonCode", None)
        return web.Response(status=201, text=exact_json(document), content_type="application/json")

    async def payment_status(self, request: web.Request) -> web.Response:
        if not self.authorised(request):
            return self.problem(401, "UNAUTHENTICATED", "Request not authenticated")
        payment_id = request.match_info["payment_id"]
        found = [t for t in self.ledger.transactions if t.txid == payment_id and t.kind == "charge"]
        if not found:
            return self.problem(404, "NOT_FOUND", "no such payment")
        result = self.billing.lookup(found[0].correlator)
        assert result is not None
        return web.Response(text=exact_json(self.payment_document(result)), content_type="application/json")

    def cloud_event(self, result: Result) -> dict[str, Any]:
        assert result.transaction is not None
        return {
            "id": secrets.token_hex(8),
            "source": self.url,
            "specversion": "1.0",
            "type": "org.camaraproject.carrier-billing.v0.payment-status-changed",
            "datacontenttype": "application/json",
            "time": self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data": self.payment_document(result),
        }

    async def notify(self, result: Result, *, token: str | None = None) -> None:
        """POST the outcome to the request's sink with its credential until it is taken (HTTP 2xx)."""
        assert result.transaction is not None
        if self.notification_delay_s:
            await asyncio.sleep(self.notification_delay_s)
        sink, bearer = self._sinks[result.transaction.txid]
        event = self.cloud_event(result)
        for _ in range(self.notification_attempts):
            if 200 <= await self._post(sink, event, token or bearer) < 300:
                return
            await asyncio.sleep(0.02)

    async def _post(self, sink: str, event: dict[str, Any], bearer: str) -> int:
        if self._client is None or self._client.closed:
            self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        headers = {"Authorization": f"Bearer {bearer}", "Content-Type": "application/cloudevents+json"}
        try:
            async with self._client.post(sink, data=exact_json(event).encode(), headers=headers) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        self.notifications_sent.append({"sink": sink, "headers": headers, "event": event, "status": status})
        return status
