"""A GSMA OneAPI Payment (REST) carrier: OAuth2 client credentials, amountTransaction charges and
refunds in decimal major units, clientCorrelator idempotency, reservations, POL/SVC errors.

`OneApiFlavor` bends it into other OneAPI-like operators (API key instead of OAuth2, XML answers,
other paths and error codes) so a new carrier can be onboarded from a spec alone.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape

import aiohttp
from aiohttp import web

from carrierpay.simulators.base import ExactNumber, Result, Simulator, exact_json, refusal_code

ONEAPI_CODES = {
    "insufficient_funds": ("POL1000", "The subscriber's balance is insufficient"),
    "barred": ("POL2003", "The subscriber is barred from this service"),
    "limit_exceeded": ("POL1001", "Charging threshold exceeded"),
    "consent_refused": ("POL0253", "The subscriber has not consented"),
    "unknown_subscriber": ("SVC0004", "No valid addresses provided in message part endUserId"),
    "invalid": ("SVC0002", "Invalid input value"),
    "throttled": ("SVC1000", "Request rate exceeded"),
    "transient": ("SVC0001", "A service error occurred; the transaction was not applied"),
    "not_found": ("SVC0270", "Charge not applied: no such transaction"),
}


@dataclass
class OneApiFlavor:
    prefix: str = "/1"
    auth: str = "oauth2"  # oauth2 | api_key
    api_key_header: str = "X-API-Key"
    response_format: str = "json"  # json | xml
    codes: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(ONEAPI_CODES))
    token_ttl_s: float = 3600.0
    # What the status lookup finds by clientCorrelator; some operators' know payments only, and
    # answer "no such transaction" about a refund they did apply.
    status_kinds: tuple[str, ...] = ("charge", "capture", "refund")
    # How amounts travel: "string" ("1.99", OneAPI's own) or "number" (1.99, as CAMARA's schema has it);
    # a "number" operator refuses an amount sent as a string, and answers with numbers.
    amount_json: str = "string"


def _xml(name: str, value: Any) -> str:
    if isinstance(value, dict):
        inner = "".join(_xml(key, item) for key, item in value.items() if item is not None)
        return f"<{name}>{inner}</{name}>"
    if isinstance(value, list):
        return "".join(_xml(name, item) for item in value)
    return f"<{name}>{escape(str(value))}</{name}>"


def charging_information(transaction: dict[str, Any] | None) -> dict[str, Any]:
    """An amountTransaction's paymentAmount.chargingInformation ({} when it has none)."""
    return ((transaction or {}).get("paymentAmount") or {}).get("chargingInformation") or {}


class OneApiSimulator(Simulator):
    dialect = "oneapi"
    txid_prefix = "OA"
    currency = "GBP"
    timezone = "Europe/London"

    def __init__(
        self,
        *,
        client_id: str = "carrierpay",
        client_secret: str = "oneapi-client-secret",
        api_key: str = "oneapi-api-key",
        mo_username: str = "oneapi-mo",
        mo_password: str = "oneapi-mo-password",
        flavor: OneApiFlavor | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.client_id = client_id
        self.client_secret = client_secret
        self.api_key = api_key
        self.flavor = flavor or OneApiFlavor()
        self.tokens: dict[str, float] = {}
        self.tokens_issued = 0
        # Inbound SMS notifications (OneAPI SMS, inboundSMSMessageNotification) go to mo_url with HTTP
        # Basic credentials agreed when the notification subscription was set up.
        self.mo_url: str | None = None
        self.mo_username = mo_username
        self.mo_password = mo_password
        self.mo_sequence = 0
        self.mo_sent: list[dict[str, Any]] = []
        # Number portability as the operator's HLR/MNP database sees it: msisdn -> (MCC, MNC) of the network
        # serving it now; a number not listed is on this operator's own network (`network`).
        self.network = ("234", "15")
        self.ported: dict[str, tuple[str, str]] = {}

    async def send_mo(self, msisdn: str, text: str, short_code: str = "84433", *, target: str | None = None) -> int:
        """A subscriber texts a short code: an inboundSMSMessageNotification to `mo_url` (or target) with
        HTTP Basic credentials. Returns the HTTP status we answered (0: not reached)."""
        self.mo_sequence += 1
        document = {"inboundSMSMessageNotification": {
            "callbackData": "carrierpay",
            "inboundSMSMessage": {
                "dateTime": self.clock.now().strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "destinationAddress": f"tel:{short_code}",
                "messageId": f"IN{self.mo_sequence:08d}",
                "message": text,
                "senderAddress": f"tel:{msisdn}",
            }}}
        url = target or self.mo_url
        if url is None:
            raise RuntimeError("no MO URL configured (mo_url)")
        credentials = base64.b64encode(f"{self.mo_username}:{self.mo_password}".encode()).decode()
        headers = {"Authorization": f"Basic {credentials}", "Content-Type": "application/json"}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
                async with client.post(url, data=json.dumps(document).encode(), headers=headers) as response:
                    status = response.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        self.mo_sent.append({"document": document, "status": status})
        return status

    def revoke_tokens(self) -> None:
        """Invalidate every issued token, as an operator's token store restart would."""
        self.tokens.clear()

    def routes(self, app: web.Application) -> None:
        prefix = self.flavor.prefix.rstrip("/")
        base = prefix + "/payment/{end_user}/transactions"
        app.router.add_post("/oauth/token", self.token)
        app.router.add_post(base + "/amount", self.amount)
        app.router.add_get(base + "/amount", self.status)
        app.router.add_post(base + "/amountReservation", self.reserve)
        app.router.add_post(base + "/amountReservation/{txid}", self.charge_reservation)
        app.router.add_get(prefix + "/customerprofile/{end_user}/balance", self.balance_query)
        app.router.add_get(prefix + "/numberlookup/{end_user}", self.number_lookup)
        app.router.add_post(prefix + "/smsmessaging/outbound/{sender}/requests", self.send_sms)

    # ---------------------------------------------------------------- wire helpers

    def answer(self, status: int, document: dict[str, Any]) -> web.Response:
        if self.flavor.response_format == "xml":
            ((name, value),) = document.items()
            body = '<?xml version="1.0" encoding="UTF-8"?>' + _xml(name, value)
            return web.Response(status=status, text=body, content_type="application/xml")
        return web.Response(status=status, text=exact_json(document), content_type="application/json")

    def error(self, code: str, status: int | None = None, variables: list[str] | None = None) -> web.Response:
        message_id, text = self.flavor.codes[code]
        kind = "policyException" if message_id.startswith("POL") else "serviceException"
        if status is None:
            status = {"throttled": 429, "transient": 503, "not_found": 404}.get(
                code, 403 if kind == "policyException" else 400
            )
        return self.answer(status, {"requestError": {kind: {"messageId": message_id, "text": text,
                                                            "variables": variables or []}}})  # fmt: skip

    def authorised(self, request: web.Request) -> bool:
        if self.flavor.auth == "api_key":
            return request.headers.get(self.flavor.api_key_header) == self.api_key
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        expiry = self.tokens.get(token)
        return expiry is not None and expiry > time.monotonic()

    def unauthorised(self) -> web.Response:
        return web.json_response({"error": "invalid_token"}, status=401)

    async def admit(self, request: web.Request, operation: str) -> tuple[web.Response | None, str | None]:
        """How a request whose body decides nothing starts: credentials, latency, then the fault drawn for
        `operation`. Returns the answer that refuses it (None: go on) and that fault."""
        if not self.authorised(request):
            return self.unauthorised(), None
        await self.latency()
        fault = self.pre_fault(operation)
        if refusal := refusal_code(fault):
            return self.error(refusal), fault
        return None, fault

    @staticmethod
    def msisdn_of(request: web.Request) -> str:
        end_user = request.match_info["end_user"]
        return end_user[4:] if end_user.startswith("tel:") else end_user

    def wire_amount(self, amount_minor: int) -> str | ExactNumber:
        major = self.major(amount_minor)
        return ExactNumber(major) if self.flavor.amount_json == "number" else major

    def amount_from_wire(self, value: Any) -> int | None:
        """Minor units of a request's amount; None when malformed, or a string where a number is due."""
        if self.flavor.amount_json == "number" and not isinstance(value, int | Decimal) or isinstance(value, bool):
            return None
        return self.minor(value)

    def transaction_document(self, result: Result, status: str, body: dict[str, Any] | None = None):
        transaction = result.transaction
        assert transaction is not None
        info = charging_information(body)
        return {
            "amountTransaction": {
                "endUserId": f"tel:{transaction.msisdn}",
                "paymentAmount": {
                    "chargingInformation": {
                        "amount": self.wire_amount(transaction.amount_minor),
                        "currency": transaction.currency,
                        "description": info.get("description") or transaction.description,
                    },
                    "totalAmountCharged": self.wire_amount(transaction.amount_minor),
                },
                "clientCorrelator": transaction.correlator,
                "referenceCode": (body or {}).get("referenceCode") or transaction.correlator,
                "serverReferenceCode": transaction.txid,
                "originalServerReferenceCode": transaction.original_txid,
                "resourceURL": f"{self.url}{self.flavor.prefix}/payment/tel:{transaction.msisdn}"
                f"/transactions/amount/{transaction.txid}",
                "transactionOperationStatus": status,
            }
        }

    # ---------------------------------------------------------------- handlers

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        header = request.headers.get("Authorization", "")
        supplied = (form.get("client_id"), form.get("client_secret"))
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            supplied = (user, password)
        if supplied != (self.client_id, self.client_secret):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = secrets.token_urlsafe(24)
        self.tokens[token] = time.monotonic() + self.flavor.token_ttl_s
        self.tokens_issued += 1
        return web.json_response({"access_token": token, "token_type": "bearer", "expires_in": self.flavor.token_ttl_s})

    async def _read_transaction(self, request: web.Request) -> dict[str, Any] | None:
        try:
            document = json.loads(await request.read(), parse_float=Decimal)
        except ValueError:
            return None
        body = document.get("amountTransaction") if isinstance(document, dict) else None
        return body if isinstance(body, dict) else None

    async def amount(self, request: web.Request) -> web.StreamResponse:
        if not self.authorised(request):
            return self.unauthorised()
        await self.latency()
        body = await self._read_transaction(request)
        if body is None or not body.get("clientCorrelator"):
            return self.error("invalid", variables=["amountTransaction.clientCorrelator"])
        operation_status = body.get("transactionOperationStatus")
        operation = {"Charged": "charge", "Refunded": "refund"}.get(operation_status)
        if operation is None:
            return self.error("invalid", variables=["transactionOperationStatus"])
        fault = self.pre_fault(operation)
        if refusal := refusal_code(fault):
            return self.error(refusal)
        info = charging_information(body)
        amount_minor = self.amount_from_wire(info.get("amount"))
        if amount_minor is None or info.get("currency") != self.currency:
            return self.error("invalid", variables=["chargingInformation.amount/currency"])
        msisdn = self.msisdn_of(request)
        correlator = str(body["clientCorrelator"])
        if operation == "charge":
            result = self.billing.charge(correlator, msisdn, amount_minor, info.get("description") or "")
        else:
            result = self.billing.refund(correlator, msisdn, amount_minor, body.get("originalServerReferenceCode"))
        garbage = self.garbage_response(fault) if fault else None
        if garbage:
            return garbage
        await self.after_apply(fault, request, operation)
        if not result.ok:
            return self.error(result.code)
        return self.answer(201, self.transaction_document(result, operation_status, body))

    async def status(self, request: web.Request) -> web.Response:
        refused, _ = await self.admit(request, "status")
        if refused is not None:
            return refused
        correlator = request.query.get("clientCorrelator", "")
        for kind, status in (("charge", "Charged"), ("capture", "Charged"), ("refund", "Refunded")):
            if kind not in self.flavor.status_kinds:
                continue
            result = self.billing.lookup(correlator, kind)
            if result is not None:
                return (
                    self.answer(200, self.transaction_document(result, status))
                    if result.ok
                    else self.error(result.code)
                )
        return self.error("not_found", variables=[correlator])

    async def reserve(self, request: web.Request) -> web.Response:
        if not self.authorised(request):
            return self.unauthorised()
        await self.latency()
        body = await self._read_transaction(request)
        if body is None or not body.get("clientCorrelator"):
            return self.error("invalid")
        fault = self.pre_fault("reserve")
        if refusal := refusal_code(fault):
            return self.error(refusal)
        info = charging_information(body)
        amount_minor = self.amount_from_wire(info.get("amount"))
        if amount_minor is None or info.get("currency") != self.currency:
            return self.error("invalid")
        result = self.billing.reserve(str(body["clientCorrelator"]), self.msisdn_of(request), amount_minor)
        if not result.ok:
            return self.error(result.code)
        return self.answer(201, self.transaction_document(result, "Reserved", body))

    async def charge_reservation(self, request: web.Request) -> web.StreamResponse:
        if not self.authorised(request):
            return self.unauthorised()
        await self.latency()
        body = await self._read_transaction(request)
        if body is not None and body.get("clientCorrelator") and body.get("transactionOperationStatus") == "Released":
            return await self.release_reservation(request, body)
        if body is None or not body.get("clientCorrelator") or body.get("transactionOperationStatus") != "Charged":
            return self.error("invalid")
        fault = self.pre_fault("capture")
        if refusal := refusal_code(fault):
            return self.error(refusal)
        info = charging_information(body)
        amount_minor = self.amount_from_wire(info.get("amount"))
        if amount_minor is None:
            return self.error("invalid")
        result = self.billing.capture(str(body["clientCorrelator"]), request.match_info["txid"], amount_minor)
        garbage = self.garbage_response(fault) if fault else None
        if garbage:
            return garbage
        await self.after_apply(fault, request, "capture")
        if not result.ok:
            return self.error(result.code)
        return self.answer(201, self.transaction_document(result, "Charged", body))

    async def release_reservation(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        """OneAPI's release: the reservation's amount goes back to the subscriber."""
        fault = self.pre_fault("release")
        if refusal := refusal_code(fault):
            return self.error(refusal)
        result = self.billing.release(str(body["clientCorrelator"]), request.match_info["txid"])
        await self.after_apply(fault, request, "release")
        if not result.ok:
            return self.error(result.code)
        return self.answer(200, self.transaction_document(result, "Released", body))

    def port(self, msisdn: str, mcc: str, mnc: str) -> None:
        """The subscriber took the number to another network."""
        self.ported[msisdn] = (mcc, mnc)

    async def number_lookup(self, request: web.Request) -> web.Response:
        """An HLR/MNP query: which network serves this number now."""
        refused, fault = await self.admit(request, "lookup")
        if refused is not None:
            return refused
        msisdn = self.msisdn_of(request)
        mcc, mnc = self.ported.get(msisdn, self.network)
        await self.after_apply(fault, request, "lookup")  # `faults.hold("lookup")`: an HLR that does not answer
        return self.answer(200, {"numberLookup": {"endUserId": f"tel:{msisdn}", "mcc": mcc, "mnc": mnc,
                                                  "ported": msisdn in self.ported}})

    async def balance_query(self, request: web.Request) -> web.Response:
        refused, _ = await self.admit(request, "balance")
        if refused is not None:
            return refused
        msisdn = self.msisdn_of(request)
        balance = self.billing.balance(msisdn)
        if balance is None:
            return self.error("unknown_subscriber")
        return self.answer(200, {"accountBalance": {"endUserId": f"tel:{msisdn}",
                                                    "balance": {"amount": self.wire_amount(balance),
                                                                "currency": self.currency}}})  # fmt: skip

    async def send_sms(self, request: web.Request) -> web.Response:
        """OneAPI SMS: outboundSMSMessageRequest to one or more tel: addresses; clientCorrelator dedupes."""
        refused, _ = await self.admit(request, "send_sms")
        if refused is not None:
            return refused
        try:
            document = json.loads(await request.read(), parse_float=Decimal)
            body = document["outboundSMSMessageRequest"]
            addresses = body["address"]
            text = body["outboundSMSTextMessage"]["message"]
        except (ValueError, KeyError, TypeError):
            return self.error("invalid", variables=["outboundSMSMessageRequest"])
        addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        msisdns = [str(address).removeprefix("tel:") for address in addresses]
        if not msisdns or not text or any(self.billing.subscriber(msisdn) is None for msisdn in msisdns):
            return self.error("unknown_subscriber")
        sender = request.match_info["sender"].removeprefix("tel:")
        correlator = str(body.get("clientCorrelator") or "")
        delivered = [
            self.deliver_text(msisdn, str(text), sender, f"{correlator}:{msisdn}" if correlator else "")
            for msisdn in msisdns
        ]
        request_id = delivered[0].message_id
        return self.answer(201, {"outboundSMSMessageRequest": {
            "address": [f"tel:{msisdn}" for msisdn in msisdns],
            "senderAddress": f"tel:{sender}",
            "clientCorrelator": correlator or None,
            "resourceReference": {
                "resourceURL": f"{self.url}{self.flavor.prefix}/smsmessaging/outbound/{sender}/requests/{request_id}"},
            "deliveryInfoList": {"deliveryInfo": [
                {"address": f"tel:{msisdn}", "deliveryStatus": "DeliveredToNetwork"} for msisdn in msisdns]},
        }})  # fmt: skip
