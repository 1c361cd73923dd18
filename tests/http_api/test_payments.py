"""CAMARA createPayment / retrievePayment / retrievePayments over real HTTP against a real database,
following code/Test_definitions of CAMARA Carrier Billing v0.5.0 (scenario tags in the test names)."""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg
import yaml

from tests.http_api.kit import NG_NUMBER, add_client, api_server, basic, conforms, error_conforms, payment_body

PAYMENTS = "/carrier-billing/v0.5/payments"


def _procedures(world_url: str) -> list[tuple]:
    with psycopg.connect(world_url) as conn:
        return conn.execute("select procedure_id, amount_minor, currency, metadata from cp.procedure "
                            "where kind = 'charge' order by procedure_id").fetchall()


async def test_create_payment_success_and_retrieve(world_url):
    """create_payment_01, _09, _13; retrievePayment 200: the decimal amount becomes exact minor units."""
    async with api_server(world_url) as api:
        await api.get_token(add_client(world_url))
        status, headers, created = await api.call("POST", PAYMENTS, payment_body("200.00", correlator="cc-1"))
        assert status == 201, created
        assert headers["Content-Type"].startswith("application/json")
        conforms("PaymentCreated", created)
        assert created["paymentStatus"] == "processing"
        assert created["amountTransaction"]["clientCorrelator"] == "cc-1"
        assert created["amountTransaction"]["paymentAmount"]["chargingInformation"]["amount"] == Decimal("200.00")
        [(pid, minor, currency, metadata)] = _procedures(world_url)
        assert (str(pid), minor, currency) == (created["paymentId"], 20000, "NGN")

        status, _, read = await api.call("GET", f"{PAYMENTS}/{created['paymentId']}")
        assert status == 200
        conforms("Payment", read)
        assert read["paymentId"] == created["paymentId"] and read["amountTransaction"]["phoneNumber"] == NG_NUMBER


async def test_client_correlator_is_idempotent(world_url):
    """create_payment_09 repeated, and 400.05: the same clientCorrelator returns the first payment; with
    another request it is refused and nothing is written."""
    async with api_server(world_url) as api:
        await api.get_token(add_client(world_url))
        body = payment_body("200", correlator="retry-me", reference="order-1")
        first = await api.call("POST", PAYMENTS, body)
        again = await api.call("POST", PAYMENTS, body)
        assert first[0] == again[0] == 201
        assert first[2]["paymentId"] == again[2]["paymentId"]
        status, _, answer = await api.call("POST", PAYMENTS, payment_body("200", correlator="retry-me",
                                                                         reference="order-2"))
        assert status == 400
        error_conforms(answer, 400, "INVALID_ARGUMENT")
        assert len(_procedures(world_url)) == 1


async def test_reference_code_reused_without_correlator_is_a_conflict(world_url):
    """create_payment_409.01."""
    async with api_server(world_url) as api:
        await api.get_token(add_client(world_url))
        assert (await api.call("POST", PAYMENTS, payment_body(reference="dup")))[0] == 201
        status, _, answer = await api.call("POST", PAYMENTS, payment_body(reference="dup"))
        assert status == 409
        error_conforms(answer, 409, "ALREADY_EXISTS")
        assert len(_procedures(world_url)) == 1


async def test_bad_requests_write_nothing(world_url):
    """create_payment_400.01 to 400.09, C02.01, C02.02, C02.04, 422.02: each answered with the spec's code."""
    ok = json.loads(payment_body())
    without = []
    for path in (["amountTransaction"], ["amountTransaction", "paymentAmount"],
                 ["amountTransaction", "referenceCode"],
                 ["amountTransaction", "paymentAmount", "chargingInformation"],
                 ["amountTransaction", "paymentAmount", "chargingInformation", "amount"],
                 ["amountTransaction", "paymentAmount", "chargingInformation", "currency"],
                 ["amountTransaction", "paymentAmount", "chargingInformation", "description"]):
        body = json.loads(json.dumps(ok))
        node = body
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
        without.append((json.dumps(body).encode(), 400, "INVALID_ARGUMENT"))
    cases = [
        (None, 400, "INVALID_ARGUMENT"),
        (b"{}", 400, "INVALID_ARGUMENT"),
        (b'{"amountTransaction": ', 400, "INVALID_ARGUMENT"),
        (payment_body(sink=1), 400, "INVALID_ARGUMENT"),
        (payment_body(sink='"not a url"'), 400, "INVALID_SINK"),
        (payment_body(sink='"http://plain.example/sink"'), 400, "INVALID_SINK"),
        (payment_body(sink='"https://sink.example/x"', sinkCredential='"x"'), 400, "INVALID_ARGUMENT"),
        (payment_body(sink='"https://sink.example/x"', sinkCredential='{"credentialType": "PLAIN", '
                      '"identifier": "a", "secret": "b"}'), 400, "INVALID_CREDENTIAL"),
        (payment_body(sink='"https://sink.example/x"', sinkCredential='{"credentialType": "ACCESSTOKEN", '
                      '"accessToken": "t", "accessTokenExpiresUtc": "2030-01-01T00:00:00Z", '
                      '"accessTokenType": "mac"}'), 400, "INVALID_TOKEN"),
        (payment_body(phone="0802000001"), 400, "INVALID_ARGUMENT"),           # C02.01
        (payment_body(phone="+4915100000001"), 404, "IDENTIFIER_NOT_FOUND"),   # C02.02: no carrier serves it
        (payment_body(phone=None), 422, "MISSING_IDENTIFIER"),                  # C02.04
        (payment_body("200.001"), 400, "INVALID_ARGUMENT"),                     # more decimals than NGN has
        (payment_body("2e400"), 400, "INVALID_ARGUMENT"),
        (payment_body("200.00", currency="EUR"), 400, "INVALID_ARGUMENT"),      # currency not authorized
        (payment_body("199.99"), 400, "INVALID_ARGUMENT"),                      # no price point of this amount
        (payment_body("-200"), 400, "INVALID_ARGUMENT"),
        (payment_body('"200.00"'), 400, "INVALID_ARGUMENT"),
        (b"x" * (70 * 1024), 400, "INVALID_ARGUMENT"),                          # over the body limit
        *without,
    ]
    async with api_server(world_url) as api:
        await api.get_token(add_client(world_url))
        for body, status, code in cases:
            got, _, answer = await api.call("POST", PAYMENTS, body)
            assert got == status, (body[:200] if body else body, answer)
            error_conforms(answer, status, code)
        got, _, answer = await api.call("POST", PAYMENTS, payment_body(), headers={"x-correlator": "bad value!"})
        assert got == 400 and answer["code"] == "INVALID_ARGUMENT"                # 400.09
    assert _procedures(world_url) == []


async def test_authentication_and_scopes(world_url, owner):
    """create_payment_401.01 to 401.03, 403.01; and a revoked client's token stops working at once."""
    client = add_client(world_url)
    async with api_server(world_url) as api:
        body = payment_body()
        assert (await api.call("POST", PAYMENTS, body))[0] == 401                      # no Authorization
        status, headers, answer = await api.call("POST", PAYMENTS, body, token="cpt_forged")
        assert status == 401 and headers["Content-Type"].startswith("application/json")
        error_conforms(answer, 401, "UNAUTHENTICATED")

        await api.get_token(client, scope="carrier-billing:payments:read")
        status, _, answer = await api.call("POST", PAYMENTS, body)
        error_conforms(answer, 403, "PERMISSION_DENIED")

        token = (await api.get_token(client))["access_token"]
        owner.execute("update cp.api_token set expires_at = now() - interval '1 second' "
                      "where token_sha256 = sha256(convert_to(%s, 'UTF8'))", [token])
        status, _, answer = await api.call("POST", PAYMENTS, body)
        error_conforms(answer, 401, "UNAUTHENTICATED")

        await api.get_token(client)
        assert (await api.call("GET", PAYMENTS))[0] == 200
        owner.execute("select admin.revoke_api_client(%s)", [client["client_id"]])
        status, _, answer = await api.call("GET", PAYMENTS)
        error_conforms(answer, 401, "UNAUTHENTICATED")
        async with api.session.post(f"{api.base}/oauth2/token", data={"grant_type": "client_credentials"},
                                    headers=basic(client["client_id"], client["client_secret"])) as r:
            assert r.status == 401 and (await r.json())["error"] == "invalid_client"
    assert _procedures(world_url) == []


async def test_token_endpoint_errors(world_url):
    client = add_client(world_url, scopes=["carrier-billing:payments:read"])
    async with api_server(world_url) as api:
        auth = basic(client["client_id"], client["client_secret"])
        cases = [({"grant_type": "password"}, auth, 400, "unsupported_grant_type"),
                 ({}, auth, 400, "invalid_request"),
                 ({"grant_type": "client_credentials"}, basic(client["client_id"], "wrong"), 401,
                  "invalid_client"),
                 ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
                 ({"grant_type": "client_credentials", "scope": "carrier-billing:payments:create"}, auth, 400,
                  "invalid_scope")]
        for form, headers, status, error in cases:
            async with api.session.post(f"{api.base}/oauth2/token", data=form, headers=headers) as r:
                assert (r.status, (await r.json())["error"]) == (status, error), form
        # client_secret_post works too, and the token carries only what was granted.
        async with api.session.post(f"{api.base}/oauth2/token", data={
                "grant_type": "client_credentials", "client_id": client["client_id"],
                "client_secret": client["client_secret"]}) as r:
            answer = await r.json()
            assert r.status == 200 and answer["token_type"] == "Bearer" and 0 < answer["expires_in"] <= 3600
            assert answer["scope"] == "carrier-billing:payments:read"
            assert r.headers["Cache-Control"] == "no-store"


async def test_retrieve_payments_filters_and_pages(world_url, owner):
    """retrievePayments: filters, order, pages with X-Total-Count; invalid date range and page."""
    async with api_server(world_url) as api:
        await api.get_token(add_client(world_url))
        ids = []
        for i in range(3):
            status, _, created = await api.call("POST", PAYMENTS, payment_body(phone=f"+23480200000{i + 1}"))
            assert status == 201, created
            ids.append(created["paymentId"])
        failed = int(ids[0])
        owner.execute("select adapter.claim_calls('test_ng', 10, interval '1 minute', 'w')")
        owner.execute("select adapter.complete_calls(jsonb_build_array(jsonb_build_object('call_id', "
                      "(select max(call_id) from cp.carrier_call where procedure_id = %s), 'outcome', 'failed', "
                      "'reason', 'insufficient_funds')))", [failed])
        status, headers, page = await api.call("GET", f"{PAYMENTS}?perPage=2&order=asc")
        assert status == 200 and headers["X-Total-Count"] == "3" and headers["Content-Last-Key"] == "2"
        assert [p["paymentId"] for p in page] == ids[:2]
        for p in page:
            conforms("Payment", p)
        status, headers, page = await api.call("GET", f"{PAYMENTS}?perPage=2&page=2&order=asc")
        assert [p["paymentId"] for p in page] == ids[2:]
        status, headers, denied = await api.call("GET", f"{PAYMENTS}?paymentStatus=denied")
        assert [p["paymentId"] for p in denied] == [ids[0]] and denied[0]["paymentStatus"] == "denied"
        status, _, answer = await api.call(
            "GET", f"{PAYMENTS}?paymentCreationDate.gte=2030-03-05T00:00:00Z"
                   "&paymentCreationDate.lte=2030-03-04T00:00:00Z")
        error_conforms(answer, 400, "CARRIER_BILLING.INVALID_DATE_RANGE")
        status, _, answer = await api.call("GET", f"{PAYMENTS}?page=0")
        error_conforms(answer, 400, "OUT_OF_RANGE")
        status, _, answer = await api.call("GET", f"{PAYMENTS}?paymentCreationDate.gte=yesterday")
        error_conforms(answer, 400, "INVALID_ARGUMENT")
        status, _, answer = await api.call("GET", f"{PAYMENTS}?paymentCreationDate.gte=2030-03-04")
        error_conforms(answer, 400, "INVALID_ARGUMENT")


async def test_retrieve_payment_not_found(world_url):
    """retrievePayment 404: an id that is no payment, or not a number, is not found."""
    async with api_server(world_url) as api:
        await api.get_token(add_client(world_url))
        for pid in ("999999", "abc", "1" * 40):
            status, _, answer = await api.call("GET", f"{PAYMENTS}/{pid}")
            error_conforms(answer, 404, "NOT_FOUND")


async def test_openapi_document_is_served_and_valid(world_url):
    from openapi_spec_validator import validate

    async with api_server(world_url) as api:
        async with api.session.get(f"{api.base}/openapi.yaml") as r:
            assert r.status == 200
            served = yaml.safe_load(await r.read())
    validate(served)
    for path in served["paths"]:
        assert path.startswith(("/carrier-billing/v0.5/", "/carrier-billing-refund/v0.3/", "/oauth2/", "/carrierpay/"))
