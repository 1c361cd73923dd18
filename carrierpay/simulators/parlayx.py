"""A ParlayX 2.1 SDP: SOAP/XML over HTTP, RequestSOAPHeader with spPassword = MD5(spId + password +
timeStamp), chargeAmount / refundAmount answered by an empty response element or a SOAP fault
carrying a messageId; getBalance; and queryChargeStatus, the status lookup SDPs add beside the standard.

Amounts on this wire are integers in minor units (cents), as many SDP deployments use them.
"""

from __future__ import annotations

import hashlib
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web
from lxml import etree

from carrierpay.simulators.base import Simulator, refusal_code
from carrierpay.simulators.oneapi import ONEAPI_CODES

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
CHARGING_NS = "http://www.csapi.org/schema/parlayx/payment/amount_charging/v2_1/local"
ACCOUNT_NS = "http://www.csapi.org/schema/parlayx/account_management/v2_1/local"
CHARGING_PATH = "/ParlayXPaymentAmountChargingService/services/AmountCharging"
ACCOUNT_PATH = "/ParlayXAccountManagementService/services/AccountManagement"
SMS_NS = "http://www.csapi.org/schema/parlayx/sms/send/v2_1/local"
SMS_PATH = "/SendSmsService/services/SendSms"
PARLAYX_CODES = {
    **ONEAPI_CODES,
    "authentication": ("SVC0901", "Authentication failed for the SP"),
    "not_found": ("SVC0270", "No charge with this referenceCode"),
}


def _local(element: etree._Element, name: str) -> etree._Element | None:
    found = element.xpath(f".//*[local-name()='{name}']")
    return found[0] if found else None


def _text(element: etree._Element, name: str) -> str:
    found = _local(element, name)
    return (found.text or "").strip() if found is not None else ""


class ParlayXSimulator(Simulator):
    dialect = "parlayx"
    txid_prefix = "PX"
    currency = "ZAR"
    timezone = "Africa/Johannesburg"

    def __init__(
        self,
        *,
        sp_id: str = "000201",
        sp_password: str = "parlayx-sp-password",
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.sp_id = sp_id
        self.sp_password = sp_password
        self.rejected_digests = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_post(CHARGING_PATH, self.soap)
        app.router.add_post(ACCOUNT_PATH, self.soap)
        app.router.add_post(SMS_PATH, self.soap)

    # ---------------------------------------------------------------- wire helpers

    @staticmethod
    def envelope(body: str, status: int = 200) -> web.Response:
        text = (
            f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAP_ENV}">'
            f"<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
        )
        return web.Response(status=status, text=text, content_type="text/xml", charset="utf-8")

    def fault(self, code: str, detail: str = "") -> web.Response:
        message_id, text = PARLAYX_CODES[code]
        kind = "PolicyException" if message_id.startswith("POL") else "ServiceException"
        side = "soapenv:Client" if code in ("invalid", "authentication") else "soapenv:Server"
        body = (
            f"<soapenv:Fault><faultcode>{side}</faultcode><faultstring>{escape(text)}</faultstring>"
            f'<detail><ns1:{kind} xmlns:ns1="http://www.csapi.org/schema/parlayx/common/v2_1">'
            f"<messageId>{message_id}</messageId><text>{escape(text)}</text>"
            f"<variables>{escape(detail)}</variables></ns1:{kind}></detail></soapenv:Fault>"
        )
        return self.envelope(body, status=500)

    def digest_ok(self, header: etree._Element | None) -> bool:
        if header is None:
            return False
        sp_id, timestamp = _text(header, "spId"), _text(header, "timeStamp")
        expected = hashlib.md5(f"{sp_id}{self.sp_password}{timestamp}".encode()).hexdigest()
        return sp_id == self.sp_id and bool(timestamp) and _text(header, "spPassword").lower() == expected

    # ---------------------------------------------------------------- handler

    async def soap(self, request: web.Request) -> web.StreamResponse:
        await self.latency()
        try:
            document = etree.fromstring(await request.read(), parser=etree.XMLParser(resolve_entities=False))
        except etree.XMLSyntaxError:
            return self.fault("invalid", "not well-formed XML")
        if not self.digest_ok(_local(document, "RequestSOAPHeader")):
            self.rejected_digests += 1
            return self.fault("authentication")
        body = _local(document, "Body")
        operation = body[0] if body is not None and len(body) else None
        if operation is None:
            return self.fault("invalid", "empty SOAP body")
        name = etree.QName(operation).localname
        handlers = {
            "chargeAmount": self.charge_amount,
            "refundAmount": self.refund_amount,
            "getBalance": self.get_balance,
            "queryChargeStatus": self.query_status,
            "sendSms": self.send_sms,
        }
        if name not in handlers:
            return self.fault("invalid", f"unsupported operation {name}")
        return await handlers[name](operation, request)

    def _money_request(self, operation: etree._Element) -> tuple[str, str, int] | None:
        msisdn = _text(operation, "endUserIdentifier").removeprefix("tel:")
        reference = _text(operation, "referenceCode")
        amount = _text(operation, "amount")
        if not (msisdn and reference and amount.isdigit() and int(amount) > 0):
            return None
        if _text(operation, "currency") not in ("", self.currency):
            return None
        return msisdn, reference, int(amount)

    async def charge_amount(self, operation: etree._Element, request: web.Request) -> web.StreamResponse:
        return await self._money(operation, request, "charge")

    async def refund_amount(self, operation: etree._Element, request: web.Request) -> web.StreamResponse:
        return await self._money(operation, request, "refund")

    async def _money(self, operation: etree._Element, request: web.Request, kind: str) -> web.StreamResponse:
        fault = self.pre_fault(kind)
        if refusal := refusal_code(fault):
            return self.fault(refusal)
        parsed = self._money_request(operation)
        if parsed is None:
            return self.fault("invalid", "endUserIdentifier, charge.amount, charge.currency or referenceCode")
        msisdn, reference, amount = parsed
        if kind == "charge":
            result = self.billing.charge(reference, msisdn, amount, _text(operation, "description"))
        else:
            result = self.billing.refund(reference, msisdn, amount)
        garbage = self.garbage_response(fault) if fault else None
        if garbage:
            return garbage
        await self.after_apply(fault, request, kind)
        if not result.ok:
            return self.fault(result.code, reference)
        return self.envelope(f'<ns1:{kind}AmountResponse xmlns:ns1="{CHARGING_NS}"/>')

    async def get_balance(self, operation: etree._Element, request: web.Request) -> web.StreamResponse:
        fault = self.pre_fault("balance")
        if refusal := refusal_code(fault):
            return self.fault(refusal)
        balance = self.billing.balance(_text(operation, "endUserIdentifier").removeprefix("tel:"))
        if balance is None:
            return self.fault("unknown_subscriber")
        return self.envelope(f'<ns1:getBalanceResponse xmlns:ns1="{ACCOUNT_NS}"><ns1:result>{balance}</ns1:result>'
                             f"</ns1:getBalanceResponse>")  # fmt: skip

    async def query_status(self, operation: etree._Element, request: web.Request) -> web.StreamResponse:
        fault = self.pre_fault("status")
        if refusal := refusal_code(fault):
            return self.fault(refusal)
        reference = _text(operation, "referenceCode")
        for kind, word in (("charge", "Charged"), ("refund", "Refunded")):
            result = self.billing.lookup(reference, kind)
            if result is None:
                continue
            transaction = result.transaction
            assert transaction is not None
            status = word if result.ok else "Failed"
            message_id = "" if result.ok else PARLAYX_CODES[result.code][0]
            return self.envelope(
                f'<ns1:queryChargeStatusResponse xmlns:ns1="{CHARGING_NS}"><ns1:result>'
                f"<status>{status}</status><transactionId>{transaction.txid}</transactionId>"
                f"<amount>{transaction.amount_minor}</amount><messageId>{message_id}</messageId>"
                f"</ns1:result></ns1:queryChargeStatusResponse>"
            )
        return self.fault("not_found", reference)

    async def send_sms(self, operation: etree._Element, request: web.Request) -> web.StreamResponse:
        """ParlayX SendSms: addresses (tel: URIs), senderName, message; answers a request identifier."""
        fault = self.pre_fault("send_sms")
        if refusal := refusal_code(fault):
            return self.fault(refusal)
        addresses = [
            (element.text or "").strip().removeprefix("tel:")
            for element in operation.xpath(".//*[local-name()='addresses']")
        ]
        text = _text(operation, "message")
        if not addresses or not all(addresses) or not text:
            return self.fault("invalid", "addresses and message are required")
        if any(self.billing.subscriber(msisdn) is None for msisdn in addresses):
            return self.fault("unknown_subscriber")
        sender = _text(operation, "senderName")
        delivered = [self.deliver_text(msisdn, text, sender) for msisdn in addresses]
        return self.envelope(f'<ns1:sendSmsResponse xmlns:ns1="{SMS_NS}"><ns1:result>{delivered[0].message_id}'
                             f"</ns1:result></ns1:sendSmsResponse>")  # fmt: skip
