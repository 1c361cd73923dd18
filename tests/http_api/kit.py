"""A merchant HTTP API server on a test world, and a client that speaks to it over real HTTP."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator

import aiohttp
import psycopg

from carrierpay.http_api.server import ApiServer, Document

DOCUMENT = Document()
NG_NUMBER = "+2348020000001"


def add_client(world_url: str, merchant: str = "acme", scopes: list[str] | None = None,
               default_product: str | None = "gems") -> dict:
    with psycopg.connect(world_url, autocommit=True) as conn:
        return conn.execute("select admin.add_api_client(%s, %s, %s)",
                            [merchant, scopes, default_product]).fetchone()[0]


def payment_body(amount: str = "200.00", currency: str = "NGN", *, phone: str = NG_NUMBER,
                 reference: str | None = None, correlator: str | None = None, **extra) -> bytes:
    """A createPayment body as text: amounts are written as the merchant would, never through a float."""
    reference = reference or f"ref-{uuid.uuid4().hex[:12]}"
    correlator_part = f'"clientCorrelator": "{correlator}", ' if correlator else ""
    phone_part = f'"phoneNumber": "{phone}", ' if phone else ""
    tail = "".join(f', "{k}": {v}' for k, v in extra.items())
    return (f'{{"amountTransaction": {{{phone_part}{correlator_part}"referenceCode": "{reference}", '
            f'"paymentAmount": {{"chargingInformation": {{"amount": {amount}, "currency": "{currency}", '
            f'"description": "100 gems"}}}}}}{tail}}}').encode()


def basic(client_id: str, secret: str) -> dict:
    """HTTP Basic client authentication (client_secret_basic)."""
    import base64
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


class Api:
    """An aiohttp session against the server, holding a bearer token when given one."""

    def __init__(self, session: aiohttp.ClientSession, base: str):
        self.session, self.base, self.token = session, base, None

    async def get_token(self, client: dict, scope: str | None = None) -> dict:
        form = {"grant_type": "client_credentials"}
        if scope is not None:
            form["scope"] = scope
        async with self.session.post(f"{self.base}/oauth2/token", data=form,
                                     headers=basic(client["client_id"], client["client_secret"])) as r:
            answer = await r.json()
            assert r.status == 200, answer
            self.token = answer["access_token"]
            return answer

    async def call(self, method: str, path: str, body: bytes | None = None, *, token: str | None = None,
                   headers: dict | None = None) -> tuple[int, dict, object]:
        hdrs = {"x-correlator": f"c-{uuid.uuid4().hex[:8]}"}
        bearer = token if token is not None else self.token
        if bearer is not None:
            hdrs["Authorization"] = f"Bearer {bearer}"
        if body is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        async with self.session.request(method, f"{self.base}{path}", data=body, headers=hdrs) as r:
            text = await r.text()
            answer = None
            if text and r.content_type == "application/json":
                import json
                from decimal import Decimal
                answer = json.loads(text, parse_float=Decimal)
            if "x-correlator" in hdrs and r.status != 400:
                assert r.headers.get("x-correlator") == hdrs["x-correlator"], (r.status, dict(r.headers))
            return r.status, dict(r.headers), answer


def gateway_url(world_url: str) -> str:
    """A login that is only a member of carrierpay_gateway, as a production API server's would be."""
    from tests.security.conftest import url_as

    role, password = f"gw_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    with psycopg.connect(world_url, autocommit=True) as conn:
        conn.execute(f"create role {role} login password '{password}' in role carrierpay_gateway")
    return url_as(world_url, role, password)


@contextlib.asynccontextmanager
async def api_server(world_url: str) -> AsyncIterator[Api]:
    async with ApiServer(gateway_url(world_url)) as server, aiohttp.ClientSession() as session:
        yield Api(session, server.base_url)


def conforms(schema_name: str, document: object) -> None:
    """Fails unless the document matches the named schema of the served OpenAPI document."""
    errors = [e.message for e in DOCUMENT.validator(f"#/components/schemas/{schema_name}").iter_errors(document)]
    assert not errors, errors


def error_conforms(answer: dict, status: int, code: str) -> None:
    assert answer["status"] == status and answer["code"] == code, answer
    assert isinstance(answer["message"], str) and answer["message"]


def settle(world_url: str, procedure_id: int | str, outcome: str = "succeeded", carrier: str = "test_ng") -> None:
    """What an adapter does with the procedure's call: lease it, then record the carrier's answer."""
    with psycopg.connect(world_url, autocommit=True) as conn:
        conn.execute("select adapter.claim_calls(%s, 100, interval '1 minute', 'test-worker')", [carrier])
        conn.execute("select adapter.complete_calls(jsonb_build_array(jsonb_build_object('call_id', "
                     "(select max(call_id) from cp.carrier_call where procedure_id = %s), 'outcome', %s::text, "
                     "'reason', case when %s::text = 'failed' then 'insufficient_funds' end)))",
                     [int(procedure_id), outcome, outcome])


def handset_pin(world_url: str, msisdn: str) -> str:
    """The PIN SMS to a number, sent as an adapter sends it, and read as the subscriber reads it."""
    with psycopg.connect(world_url, autocommit=True) as conn:
        text = conn.execute("select params->>'text' from cp.carrier_call where operation = 'send_sms' "
                            "and params->>'msisdn' = %s and status = 'queued' order by call_id desc limit 1",
                            [msisdn]).fetchone()[0]
        for (call,) in conn.execute("select adapter.claim_calls('test_gb', 100, interval '1 minute', 'handset')"):
            conn.execute("select adapter.complete_calls(jsonb_build_array(jsonb_build_object('call_id', %s::bigint, "
                         "'outcome', 'succeeded')))", [call["call_id"]])
    return re.search(r"is ([0-9]+)", text).group(1)
