"""carrierpay's extensions over real HTTP: subscriptions, consents and balance checks, in CAMARA's conventions."""

from __future__ import annotations

import json
from decimal import Decimal

from tests.http_api.kit import NG_NUMBER, add_client, api_server, conforms, error_conforms, handset_pin

EXT = "/carrierpay/v1"
GB_NUMBER = "+447700900002"


def _body(**fields) -> bytes:
    return json.dumps(fields).encode()


async def test_subscription_lifecycle(world_url):
    async with api_server(world_url) as api:
        await api.get_token(add_client(world_url))
        body = _body(phoneNumber=NG_NUMBER, productId="club", plan="daily", clientCorrelator="sub-1")
        status, _, created = await api.call("POST", f"{EXT}/subscriptions", body)
        assert status == 201, created
        conforms("Subscription", created)
        # Nigerian rules want the subscriber's PIN before a subscription starts.
        assert created["status"] == "pending_optin" and "validationInfo" in created
        assert created["price"] == {"amount": Decimal("100.00"), "currency": "NGN"}
        sid = created["subscriptionId"]
        again = await api.call("POST", f"{EXT}/subscriptions", body)
        assert again[2]["subscriptionId"] == sid
        status, _, other = await api.call("POST", f"{EXT}/subscriptions", _body(
            phoneNumber=NG_NUMBER, productId="club", plan="daily", clientCorrelator="sub-2"))
        assert other["subscriptionId"] == sid and other["existing"] is True
        status, headers, listed = await api.call("GET", f"{EXT}/subscriptions?subscriptionStatus=pending_optin")
        assert status == 200 and headers["X-Total-Count"] == "1" and listed[0]["subscriptionId"] == sid
        status, _, read = await api.call("GET", f"{EXT}/subscriptions/{sid}")
        assert read["status"] == "pending_optin"
        status, _, cancelled = await api.call("POST", f"{EXT}/subscriptions/{sid}/cancel", _body(reason="user asked"))
        assert status == 200 and cancelled["status"] == "cancelled" and cancelled["cancelReason"] == "user asked"
        status, _, answer = await api.call("POST", f"{EXT}/subscriptions/{sid}/cancel", _body())
        error_conforms(answer, 409, "INCOMPATIBLE_STATE")
        for path in (f"{EXT}/subscriptions/999999", f"{EXT}/subscriptions/x"):
            status, _, answer = await api.call("GET", path)
            error_conforms(answer, 404, "NOT_FOUND")
        status, _, answer = await api.call("POST", f"{EXT}/subscriptions", _body(
            phoneNumber=NG_NUMBER, productId="club", plan="yearly", clientCorrelator="sub-3"))
        error_conforms(answer, 400, "INVALID_ARGUMENT")


async def test_subscription_with_pin_consent(world_url):
    """Where the regulation wants consent (UK): pending_optin, then the PIN through /consents."""
    async with api_server(world_url) as api:
        await api.get_token(add_client(world_url))
        status, _, created = await api.call("POST", f"{EXT}/subscriptions", _body(
            phoneNumber=GB_NUMBER, productId="club", plan="monthly", clientCorrelator="sub-gb"))
        assert status == 201 and created["status"] == "pending_optin", created
        consent = created["validationInfo"]["authorizationId"]
        pin = handset_pin(world_url, GB_NUMBER)
        wrong = str((int(pin) + 1) % 10 ** len(pin)).zfill(len(pin))
        status, _, answer = await api.call("POST", f"{EXT}/consents/{consent}/validate", _body(code=wrong))
        error_conforms(answer, 400, "CARRIER_BILLING.INVALID_CODE")
        status, _, confirmed = await api.call("POST", f"{EXT}/consents/{consent}/validate", _body(code=pin))
        assert status == 200 and confirmed["status"] == "confirmed", confirmed
        conforms("Consent", confirmed)
        status, _, read = await api.call("GET", f"{EXT}/subscriptions/{created['subscriptionId']}")
        assert read["status"] == "active"


async def test_consent_for_a_purchase_and_balance_check(world_url, owner):
    async with api_server(world_url) as api:
        await api.get_token(add_client(world_url))
        status, _, consent = await api.call("POST", f"{EXT}/consents", _body(
            phoneNumber=GB_NUMBER, productId="gems", clientCorrelator="c-1"))
        assert status == 201 and consent["status"] == "pending", consent
        conforms("Consent", consent)
        status, _, answer = await api.call("POST", f"{EXT}/consents/abc/validate", _body(code="1"))
        error_conforms(answer, 404, "NOT_FOUND")

        body = _body(phoneNumber=NG_NUMBER, amount={"amount": 0, "currency": "NGN"}, clientCorrelator="b-1")
        status, _, answer = await api.call("POST", f"{EXT}/balance-checks", body)
        error_conforms(answer, 400, "INVALID_ARGUMENT")
        body = b'{"phoneNumber": "+2348020000001", "amount": {"amount": 150.25, "currency": "NGN"}, ' \
               b'"clientCorrelator": "b-2"}'
        status, _, check = await api.call("POST", f"{EXT}/balance-checks", body)
        assert status == 201, check
        conforms("BalanceCheck", check)
        assert check["amount"]["amount"] == Decimal("150.25") and check["status"] == "processing"
        assert owner.execute("select amount_minor from cp.procedure where procedure_id = %s",
                             [int(check["balanceCheckId"])]).fetchone()[0] == 15025
        owner.execute("select adapter.claim_calls('test_ng', 100, interval '1 minute', 'w')")
        owner.execute("select adapter.complete_calls(jsonb_build_array(jsonb_build_object('call_id', "
                      "(select max(call_id) from cp.carrier_call where procedure_id = %s), 'outcome', 'succeeded', "
                      "'balance_minor', 99999)))", [int(check["balanceCheckId"])])
        status, _, read = await api.call("GET", f"{EXT}/balance-checks/{check['balanceCheckId']}")
        assert read["status"] == "succeeded" and read["sufficient"] is True


async def test_extension_scopes(world_url):
    async with api_server(world_url) as api:
        await api.get_token(add_client(world_url, scopes=["carrier-billing:payments:read"]))
        for method, path in (("GET", f"{EXT}/subscriptions"), ("GET", f"{EXT}/balance-checks/1")):
            status, _, answer = await api.call(method, path)
            error_conforms(answer, 403, "PERMISSION_DENIED")
