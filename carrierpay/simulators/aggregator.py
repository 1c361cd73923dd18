"""A DCB aggregator: form-encoded API signed with HMAC-SHA256 (X-API-Key, X-Timestamp, X-Signature);
charges are only "accepted" and their result is POSTed back as a form callback signed with
`sig` = md5(sorted "key=value" pairs joined by "&" + callback secret), retried until HTTP 200.
Also sync refunds, a balance query, a charge status lookup and a PIN opt-in flow.

Callback knobs (attributes, settable from tests): callback_delay_s, callback_attempts,
callback_retry_s, callback_duplicates, callback_before_response, default_callback_url.
Subscribers' texts to a short code (MO) are forwarded to `mo_url` by `send_mo`, signed the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import aiohttp
from aiohttp import web

from carrierpay.simulators.base import Result, Simulator

ERROR_CODES = {
    "insufficient_funds": "NO_FUNDS",
    "barred": "SUBSCRIBER_BARRED",
    "unknown_subscriber": "UNKNOWN_SUBSCRIBER",
    "limit_exceeded": "LIMIT_EXCEEDED",
    "not_found": "NOT_FOUND",
}


class AggregatorSimulator(Simulator):
    dialect = "aggregator"
    txid_prefix = "AG"
    currency = "NGN"
    timezone = "Africa/Lagos"

    def __init__(
        self,
        *,
        api_key: str = "aggregator-key",
        api_secret: str = "aggregator-signing-secret",
        callback_secret: str = "aggregator-callback-secret",
        service_id: str = "svc-100",
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.api_key = api_key
        self.api_secret = api_secret
        self.callback_secret = callback_secret
        self.service_id = service_id
        self.default_callback_url: str | None = None
        self.mo_url: str | None = None  # where subscribers' texts to our short codes are forwarded
        self.mo_sequence = 0
        self.callback_delay_s = 0.0
        self.callback_attempts = 12
        self.callback_retry_s = 0.02
        self.callback_duplicates = 0
        self.callback_before_response = False
        self.callbacks_sent: list[dict[str, Any]] = []  # every delivery attempt: fields and HTTP status
        self.rejected_signatures = 0
        self.pins: dict[str, str] = {}  # pin_id -> PIN, as if delivered by SMS
        self._pin_owner: dict[str, str] = {}
        self._callback_targets: dict[str, str] = {}
        self._client: aiohttp.ClientSession | None = None

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/charges", self.charge)
        app.router.add_get("/v1/charges/{reference}", self.charge_status)
        app.router.add_post("/v1/refunds", self.refund)
        app.router.add_get("/v1/balance", self.balance_query)
        app.router.add_post("/v1/pin/send", self.pin_send)
        app.router.add_post("/v1/pin/verify", self.pin_verify)
        app.router.add_post("/v1/sms", self.send_sms)

    async def stop(self) -> None:
        await super().stop()
        if self._client is not None:
            await self._client.close()

    # ---------------------------------------------------------------- request authentication

    def signature_ok(self, request: web.Request, body: bytes) -> bool:
        timestamp = request.headers.get("X-Timestamp", "")
        canonical = f"{request.method}\n{request.path}\n{timestamp}\n{body.decode()}"
        expected = hmac.new(self.api_secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()
        supplied = request.headers.get("X-Signature", "")
        return request.headers.get("X-API-Key") == self.api_key and hmac.compare_digest(supplied, expected)

    async def guarded(
        self, request: web.Request, operation: str
    ) -> tuple[dict[str, str], str | None, web.Response | None]:
        """Parsed form, the fault to act on, or an early error answer."""
        body = await request.read()
        if not self.signature_ok(request, body):
            self.rejected_signatures += 1
            return {}, None, self.error(401, "INVALID_SIGNATURE", "request signature does not match")
        await self.latency()
        fault = self.pre_fault(operation)
        if fault == "throttle":
            return {}, None, self.error(429, "TPS_EXCEEDED", "TPS exceeded for this service")
        if fault == "transient":
            return {}, None, self.error(503, "TEMPORARY_ERROR", "please retry later")
        form = dict((await request.post()).items()) if body else {}
        return {k: str(v) for k, v in form.items()}, fault, None

    @staticmethod
    def error(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"status": "error", "error_code": code, "error_message": message}, status=status)

    # ---------------------------------------------------------------- charges and callbacks

    async def charge(self, request: web.Request) -> web.StreamResponse:
        form, fault, early = await self.guarded(request, "charge")
        if early:
            return early
        amount = self.minor(form.get("amount", ""))
        reference = form.get("reference", "")
        if amount is None or not reference or not form.get("msisdn") or form.get("currency") != self.currency:
            return self.error(400, "INVALID_REQUEST", "msisdn, amount, currency and reference are required")
        repeated = self.billing.lookup(reference) is not None
        result = self.billing.charge(reference, form["msisdn"], amount, form.get("description", ""))
        assert result.transaction is not None
        target = form.get("callback_url") or self.default_callback_url
        if target:
            self._callback_targets[reference] = target
        if not repeated and target:
            delivery = self.deliver(result, target)
            if self.callback_before_response:
                await delivery
            else:
                self.spawn(delivery)
        garbage = self.garbage_response(fault) if fault else None
        if garbage:
            return garbage
        await self.after_apply(fault, request, "charge")
        return web.json_response(
            {"status": "accepted", "message_id": result.transaction.txid, "reference": reference}, status=202
        )

    def callback_fields(self, result: Result) -> dict[str, str]:
        transaction = result.transaction
        assert transaction is not None
        price = self.major(transaction.amount_minor)
        fields = {
            "message_id": transaction.txid,
            "reference": transaction.correlator,
            "msisdn": transaction.msisdn,
            "status": "ok" if result.ok else "failed",
            "price": price,
            "price_wo_vat": self.major(round(transaction.amount_minor / 1.075)),
            "currency": transaction.currency,
            "service_id": self.service_id,
            "error_code": "" if result.ok else ERROR_CODES.get(result.code, "FAILED"),
            "timestamp": self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        canonical = "&".join(f"{key}={fields[key]}" for key in sorted(fields))
        fields["sig"] = hashlib.md5((canonical + self.callback_secret).encode()).hexdigest()
        return fields

    async def deliver(self, result: Result, target: str) -> None:
        """POST the result until the merchant answers 200, then any configured duplicates."""
        if self.callback_delay_s:
            await asyncio.sleep(self.callback_delay_s)
        fields = self.callback_fields(result)
        delivered = False
        for _ in range(self.callback_attempts):
            if await self._post(target, fields) == 200:
                delivered = True
                break
            await asyncio.sleep(self.callback_retry_s)
        if delivered:
            for _ in range(self.callback_duplicates):
                await self._post(target, fields)

    async def send_mo(self, msisdn: str, text: str, short_code: str = "33001", *, target: str | None = None) -> int:
        """A subscriber texts the short code: the aggregator forwards it as a form POST signed like its
        result callbacks (`sig`), to `mo_url` unless another target is given. Returns our HTTP status."""
        self.mo_sequence += 1
        fields = {
            "mo_id": f"MO{self.mo_sequence:08d}",
            "sender": msisdn.lstrip("+"),  # aggregators write numbers without the plus
            "shortcode": short_code,
            "text": text,
            "keyword": (text.split() or [""])[0].upper(),
            "operator": "NG-20",
            "received_at": self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        canonical = "&".join(f"{key}={fields[key]}" for key in sorted(fields))
        fields["sig"] = hashlib.md5((canonical + self.callback_secret).encode()).hexdigest()
        url = target or self.mo_url
        if url is None:
            raise RuntimeError("no MO URL configured (mo_url)")
        return await self._post(url, fields)

    async def send_late_callback(self, reference: str) -> None:
        """Deliver a charge's callback again, now: the late or replayed callback of real life."""
        result = self.billing.lookup(reference)
        target = self._callback_targets.get(reference) or self.default_callback_url
        if result is None or target is None:
            raise KeyError(reference)
        await self._post(target, self.callback_fields(result))

    async def _post(self, target: str, fields: dict[str, str]) -> int:
        if self._client is None or self._client.closed:
            self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            async with self._client.post(target, data=fields) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        self.callbacks_sent.append({"fields": fields, "status": status})
        return status

    async def charge_status(self, request: web.Request) -> web.Response:
        _, _, early = await self.guarded(request, "status")
        if early:
            return early
        result = self.billing.lookup(request.match_info["reference"])
        if result is None:
            return web.json_response({"status": "not_found", "reference": request.match_info["reference"]})
        fields = self.callback_fields(result)
        fields.pop("sig")
        return web.json_response(fields)

    # ---------------------------------------------------------------- sync operations

    async def refund(self, request: web.Request) -> web.StreamResponse:
        form, fault, early = await self.guarded(request, "refund")
        if early:
            return early
        amount = self.minor(form.get("amount", ""))
        if amount is None or not form.get("reference") or not form.get("original_message_id"):
            return self.error(400, "INVALID_REQUEST", "reference, original_message_id and amount are required")
        result = self.billing.refund(form["reference"], form.get("msisdn", ""), amount, form["original_message_id"])
        await self.after_apply(fault, request, "refund")
        if not result.ok:
            return web.json_response(
                {"status": "failed", "error_code": ERROR_CODES.get(result.code, "REFUND_REFUSED")}, status=200
            )
        assert result.transaction is not None
        return web.json_response({"status": "ok", "refund_id": result.transaction.txid, "reference": form["reference"]})

    async def balance_query(self, request: web.Request) -> web.Response:
        _, _, early = await self.guarded(request, "balance")
        if early:
            return early
        msisdn = request.query.get("msisdn", "")
        balance = self.billing.balance(msisdn)
        if balance is None:
            return web.json_response({"status": "failed", "error_code": "UNKNOWN_SUBSCRIBER"}, status=404)
        return web.json_response(
            {"status": "ok", "msisdn": msisdn, "balance": self.major(balance), "currency": self.currency}
        )

    async def pin_send(self, request: web.Request) -> web.Response:
        form, _, early = await self.guarded(request, "optin_send_pin")
        if early:
            return early
        if self.billing.subscriber(form.get("msisdn", "")) is None:
            return web.json_response({"status": "failed", "error_code": "UNKNOWN_SUBSCRIBER"}, status=404)
        pin_id = f"PIN{len(self.pins) + 1:06d}"
        self.pins[pin_id] = f"{self.rng.randrange(10000):04d}"
        self._pin_owner[pin_id] = form["msisdn"]
        return web.json_response({"status": "ok", "pin_id": pin_id})

    async def pin_verify(self, request: web.Request) -> web.Response:
        form, _, early = await self.guarded(request, "optin_verify")
        if early:
            return early
        pin_id = form.get("pin_id", "")
        if self._pin_owner.get(pin_id) != form.get("msisdn") or self.pins.get(pin_id) != form.get("pin"):
            return web.json_response({"status": "failed", "error_code": "PIN_INVALID"})
        return web.json_response({"status": "ok", "consent_id": f"C-{pin_id}"})

    async def send_sms(self, request: web.Request) -> web.Response:
        """A plain signed form: msisdn, text, reference (deduplicated), optional sender."""
        form, _, early = await self.guarded(request, "send_sms")
        if early:
            return early
        msisdn, text = form.get("msisdn", ""), form.get("text", "")
        if not msisdn or not text:
            return self.error(400, "INVALID_REQUEST", "msisdn and text are required")
        if self.billing.subscriber(msisdn) is None:
            return web.json_response({"status": "failed", "error_code": "UNKNOWN_SUBSCRIBER"}, status=404)
        message = self.deliver_text(msisdn, text, form.get("sender", ""), form.get("reference", ""))
        return web.json_response({"status": "ok", "message_id": message.message_id})
