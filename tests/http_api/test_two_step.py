"""CAMARA two-step payments over real HTTP (preparePayment, validatePayment, confirmPayment, cancelPayment),
following their code/Test_definitions: a held charge whose carrier call is queued only at confirm."""

from __future__ import annotations

import json

import psycopg

from tests.http_api.kit import (
    NG_NUMBER,
    add_client,
    api_server,
    conforms,
    error_conforms,
    handset_pin,
    payment_body,
)

PAYMENTS = "/carrier-billing/v0.5/payments"
GB_NUMBER = "+447700900001"


def _calls(world_url: str, payment_id: str) -> list[tuple]:
    with psycopg.connect(world_url) as conn:
        return conn.execute("select operation, status from cp.carrier_call where procedure_id = %s",
                            [int(payment_id)]).fetchall()


def _phone(number: str) -> bytes:
    return json.dumps({"phoneNumber": number}).encode()


async def test_prepare_confirm_queues_the_charge_only_then(world_url):
    """prepare_payment_01 (reserved), confirm_payment_01, confirm 409 PAYMENT_CONFIRMED, cancel after confirm."""
    async with api_server(world_url) as api:
        await api.get_token(add_client(world_url))
        body = payment_body(correlator="two-1", reference="two-1")
        status, _, prepared = await api.call("POST", f"{PAYMENTS}/prepare", body)
        assert status == 201, prepared
        conforms("BodyAmountReservationTransactionForReserve", prepared)
        assert prepared["paymentStatus"] == "reserved" and "validationInfo" not in prepared
        pid = prepared["paymentId"]
        assert _calls(world_url, pid) == []                      # held: the carrier is asked nothing yet
        again = await api.call("POST", f"{PAYMENTS}/prepare", body)
        assert again[2]["paymentId"] == pid
        status, _, read = await api.call("GET", f"{PAYMENTS}/{pid}")
        assert read["paymentStatus"] == "reserved"

        status, _, answer = await api.call("POST", f"{PAYMENTS}/{pid}/confirm", _phone(NG_NUMBER))
        assert status == 202, answer
        assert _calls(world_url, pid) == [("charge", "queued")]
        status, _, read = await api.call("GET", f"{PAYMENTS}/{pid}")
        assert read["paymentStatus"] == "processing"
        for step in ("confirm", "cancel"):
            status, _, answer = await api.call("POST", f"{PAYMENTS}/{pid}/{step}", _phone(NG_NUMBER))
            error_conforms(answer, 409, "CARRIER_BILLING.PAYMENT_CONFIRMED")
        assert _calls(world_url, pid) == [("charge", "queued")]


async def test_prepare_cancel_sends_nothing(world_url):
    """cancel_payment_01 and its 409s; 400 without a body, 422 MISSING_IDENTIFIER without phoneNumber (C02.04),
    404 for another number or payment, IDENTIFIER_NOT_FOUND for a number no carrier serves (C02.02)."""
    async with api_server(world_url) as api:
        await api.get_token(add_client(world_url))
        status, _, prepared = await api.call("POST", f"{PAYMENTS}/prepare", payment_body())
        pid = prepared["paymentId"]
        for body, code, want in ((None, 400, "INVALID_ARGUMENT"), (b"{}", 422, "MISSING_IDENTIFIER"),
                                 (_phone("+2348020000099"), 404, "NOT_FOUND"),
                                 (_phone("+9991234567"), 404, "IDENTIFIER_NOT_FOUND")):
            status, _, answer = await api.call("POST", f"{PAYMENTS}/{pid}/cancel", body)
            error_conforms(answer, code, want)
        status, _, answer = await api.call("POST", f"{PAYMENTS}/123456/cancel", _phone(NG_NUMBER))
        error_conforms(answer, 404, "NOT_FOUND")
        status, _, answer = await api.call("POST", f"{PAYMENTS}/{pid}/cancel", _phone(NG_NUMBER))
        assert status == 202, answer
        status, _, read = await api.call("GET", f"{PAYMENTS}/{pid}")
        assert read["paymentStatus"] == "cancelled"
        for step in ("confirm", "cancel"):
            status, _, answer = await api.call("POST", f"{PAYMENTS}/{pid}/{step}", _phone(NG_NUMBER))
            error_conforms(answer, 409, "CARRIER_BILLING.PAYMENT_CANCELLED")
        assert _calls(world_url, pid) == []


async def test_validation_by_pin_where_the_regulation_wants_consent(world_url):
    """prepare_payment pending_validation; validate_payment_01, 400 INVALID_AUTHORIZATION_ID, INVALID_CODE;
    confirm before validation is 403 CARRIER_BILLING.PAYMENT_DENIED; validating twice 409."""
    async with api_server(world_url) as api:
        await api.get_token(add_client(world_url))
        status, _, prepared = await api.call("POST", f"{PAYMENTS}/prepare",
                                             payment_body("3.00", "GBP", phone=GB_NUMBER))
        assert status == 201, prepared
        conforms("BodyAmountReservationTransactionForReserve", prepared)
        assert prepared["paymentStatus"] == "pending_validation"
        authorization = prepared["validationInfo"]["authorizationId"]
        pid = prepared["paymentId"]
        status, _, answer = await api.call("POST", f"{PAYMENTS}/{pid}/confirm", _phone(GB_NUMBER))
        error_conforms(answer, 403, "CARRIER_BILLING.PAYMENT_DENIED")
        pin = handset_pin(world_url, GB_NUMBER)
        wrong = str((int(pin) + 1) % 10 ** len(pin)).zfill(len(pin))
        for body, code in ((json.dumps({"authorizationId": "nope", "code": pin}),
                            "CARRIER_BILLING.INVALID_AUTHORIZATION_ID"),
                           (json.dumps({"authorizationId": authorization, "code": wrong}),
                            "CARRIER_BILLING.INVALID_CODE"),
                           (json.dumps({"authorizationId": authorization}), "INVALID_ARGUMENT")):
            status, _, answer = await api.call("POST", f"{PAYMENTS}/{pid}/validate", body.encode())
            error_conforms(answer, 400, code)
        body = json.dumps({"authorizationId": authorization, "code": pin}).encode()
        status, _, answer = await api.call("POST", f"{PAYMENTS}/{pid}/validate", body)
        assert status == 204, answer
        status, _, read = await api.call("GET", f"{PAYMENTS}/{pid}")
        assert read["paymentStatus"] == "reserved"
        status, _, answer = await api.call("POST", f"{PAYMENTS}/{pid}/validate", body)
        error_conforms(answer, 409, "ALREADY_EXISTS")
        assert (await api.call("POST", f"{PAYMENTS}/{pid}/confirm", _phone(GB_NUMBER)))[0] == 202
        assert _calls(world_url, pid) == [("charge", "queued")]


async def test_second_steps_of_a_one_step_payment(world_url):
    async with api_server(world_url) as api:
        await api.get_token(add_client(world_url))
        status, _, created = await api.call("POST", PAYMENTS, payment_body())
        pid = created["paymentId"]
        for step, body in (("confirm", _phone(NG_NUMBER)), ("cancel", _phone(NG_NUMBER)),
                           ("validate", b'{"authorizationId": "1", "code": "1"}')):
            status, _, answer = await api.call("POST", f"{PAYMENTS}/{pid}/{step}", body)
            error_conforms(answer, 409, "CARRIER_BILLING.PAYMENT_CONFIRMED")
