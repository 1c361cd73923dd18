"""CAMARA Refund v0.3.0 over real HTTP: createRefund, retrieveRefunds, retrieveRefund and
retrievePaymentRemainingAmount, following its code/Test_definitions (scenario tags in docstrings)."""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg

from tests.http_api.kit import add_client, api_server, conforms, error_conforms, payment_body, settle

PAYMENTS = "/carrier-billing/v0.5/payments"
REFUNDS = "/carrier-billing-refund/v0.3/payments/{}/refunds"


def refund_body(kind: str = "partial", amount: str | None = "50.00", currency: str = "NGN", *,
                reference: str = "refund-1", correlator: str | None = None, reason: str | None = None) -> bytes:
    transaction = {"referenceCode": reference, "refundAmount": {}}
    if correlator:
        transaction["clientCorrelator"] = correlator
    body = {"type": kind, "amountTransaction": transaction}
    if reason:
        body["reason"] = reason
    text = json.dumps(body)
    if kind == "partial" and amount is not None:
        # The amount is spliced in as written: a JSON number, never a float on the way.
        information = f'{{"amount": {amount}, "currency": "{currency}", "description": "refund"}}'
        text = text.replace('"refundAmount": {}', f'"refundAmount": {{"chargingInformation": {information}}}')
    return text.encode()


async def _collected_payment(api, world_url: str, phone: str = "+2348020000001") -> str:
    status, _, created = await api.call("POST", PAYMENTS, payment_body(phone=phone))
    assert status == 201, created
    settle(world_url, created["paymentId"])
    return created["paymentId"]


def _refunds(world_url: str) -> list[tuple]:
    with psycopg.connect(world_url) as conn:
        return conn.execute("select procedure_id, parent_id, amount_minor, status from cp.procedure "
                            "where kind = 'refund' order by procedure_id").fetchall()


async def test_partial_then_total_refund(world_url):
    """create_refund_01, _03 (partial), _02 (total), _09 (clientCorrelator); remaining amount 01 and 02;
    retrieveRefund and retrieveRefunds success."""
    async with api_server(world_url) as api:
        await api.get_token(add_client(world_url))
        pid = await _collected_payment(api, world_url)
        status, _, remaining = await api.call("GET", REFUNDS.format(pid) + "/remaining-amount")
        assert status == 200 and remaining == {"amount": Decimal("200.00"), "currency": "NGN"}
        conforms("PaymentRemainingAmount", remaining)

        status, headers, partial = await api.call("POST", REFUNDS.format(pid),
                                                  refund_body(amount="50.50", correlator="r-1", reason="late"))
        assert status == 201, partial
        conforms("Refund", partial)
        conforms("PartialRefund", partial)
        assert (partial["type"], partial["refundStatus"], partial["reason"]) == ("partial", "processing", "late")
        assert partial["amountTransaction"]["clientCorrelator"] == "r-1"
        again = await api.call("POST", REFUNDS.format(pid), refund_body(amount="50.50", correlator="r-1",
                                                                         reason="late"))
        assert again[0] == 201 and again[2]["refundId"] == partial["refundId"]
        assert [(r[2], r[3]) for r in _refunds(world_url)] == [(5050, "pending")]

        status, _, remaining = await api.call("GET", REFUNDS.format(pid) + "/remaining-amount")
        assert remaining["amount"] == Decimal("149.50")

        settle(world_url, partial["refundId"])
        status, _, read = await api.call("GET", REFUNDS.format(pid) + f"/{partial['refundId']}")
        assert status == 200 and read["refundStatus"] == "succeeded" and "refundDate" in read
        conforms("Refund", read)

        status, _, total = await api.call("POST", REFUNDS.format(pid), refund_body("total", reference="refund-2"))
        assert status == 201 and total["type"] == "total", total
        conforms("TotalRefund", total)
        assert _refunds(world_url)[-1][2] == 14950
        status, _, remaining = await api.call("GET", REFUNDS.format(pid) + "/remaining-amount")
        assert remaining["amount"] == Decimal("0.00")

        status, headers, listed = await api.call("GET", REFUNDS.format(pid) + "?order=asc")
        assert status == 200 and headers["X-Total-Count"] == "2"
        assert [r["refundId"] for r in listed] == [partial["refundId"], total["refundId"]]
        status, headers, listed = await api.call("GET", REFUNDS.format(pid) + "?refundStatus=succeeded")
        assert [r["refundId"] for r in listed] == [partial["refundId"]]


async def test_refund_refusals_write_nothing(world_url):
    """create_refund_400.01, 400.02, 400.04, 400.05, 404, 409.01, 422.01, 422.03; retrieveRefund 404."""
    async with api_server(world_url) as api:
        await api.get_token(add_client(world_url))
        pid = await _collected_payment(api, world_url)
        status, _, processing = await api.call("POST", PAYMENTS, payment_body(phone="+2348020000002"))
        assert status == 201
        assert (await api.call("POST", REFUNDS.format(pid), refund_body(reference="used")))[0] == 201
        before = _refunds(world_url)
        cases = [
            (pid, None, 400, "INVALID_ARGUMENT"),
            (pid, b"{}", 400, "INVALID_ARGUMENT"),
            (pid, b'{"type": "partial"}', 400, "INVALID_ARGUMENT"),
            (pid, refund_body(amount=None), 400, "INVALID_ARGUMENT"),
            (pid, b'{"type": "total", "amountTransaction": {"refundAmount": {}}}', 400, "INVALID_ARGUMENT"),
            (pid, refund_body(amount="1.001"), 400, "INVALID_ARGUMENT"),
            (pid, refund_body(currency="GBP"), 400, "INVALID_ARGUMENT"),
            (pid, refund_body(reference="used"), 409, "ALREADY_EXISTS"),
            (pid, refund_body(amount="150.01", reference="too-much"), 422,
             "CARRIER_BILLING_REFUND.UNAUTHORIZED_AMOUNT"),
            (processing["paymentId"], refund_body(reference="r-p"), 422,
             "CARRIER_BILLING_REFUND.INVALID_PAYMENT_STATUS"),
            ("987654", refund_body(reference="r-x"), 404, "NOT_FOUND"),
        ]
        for payment, body, status, code in cases:
            got, _, answer = await api.call("POST", REFUNDS.format(payment), body)
            assert got == status, (body, answer)
            error_conforms(answer, status, code)
        assert _refunds(world_url) == before
        for path in (REFUNDS.format(pid) + "/999999", REFUNDS.format(pid) + "/x", REFUNDS.format("abc"),
                     REFUNDS.format("987654") + "/remaining-amount"):
            status, _, answer = await api.call("GET", path)
            error_conforms(answer, 404, "NOT_FOUND")
        status, _, answer = await api.call(
            "GET", REFUNDS.format(pid) + "?refundCreationDate.gte=2030-03-05T00:00:00Z"
                                         "&refundCreationDate.lte=2030-03-04T00:00:00Z")
        error_conforms(answer, 400, "CARRIER_BILLING_REFUND.INVALID_DATE_RANGE")


async def test_refund_scopes(world_url):
    """create_refund_403.01 and retrieve 403: a token without the refund scopes."""
    async with api_server(world_url) as api:
        client = add_client(world_url)
        await api.get_token(client)
        pid = await _collected_payment(api, world_url)
        await api.get_token(client, scope="carrier-billing:payments:read carrier-billing:payments:create")
        for method, path, body in (("POST", REFUNDS.format(pid), refund_body()), ("GET", REFUNDS.format(pid), None),
                                   ("GET", REFUNDS.format(pid) + "/remaining-amount", None)):
            status, _, answer = await api.call(method, path, body)
            error_conforms(answer, 403, "PERMISSION_DENIED")
