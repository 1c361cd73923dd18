"""A callback server on a test database, carriers onboarded from the shipped aggregator spec (and
variants of it), and an attacker's tools: raw HTTP over a plain socket and callbacks signed with
whatever key the test chooses. No simulator and no adapter: the tests lease calls themselves, so
they decide exactly which calls were sent."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import ssl
from typing import Any
from urllib.parse import urlencode

import psycopg
from psycopg.types.json import Jsonb

from carrierpay.adapters.callback_server import CallbackServer
from carrierpay.guarded_http import HttpLimits
from carrierpay.simulators.fleet import SECRETS, spec_for

NG = "aggregator_ng"
CALLBACK_SECRET = SECRETS["AGGREGATOR_NG_CALLBACK_SECRET"]
PRICE = 10_000  # NGN 100.00
JSON_NG = "hooks_ng"  # JSON callbacks signed over the raw body (HMAC-SHA256 in a header)
BEARER_NG = "token_ng"  # JSON callbacks carrying a bearer credential we handed the carrier
MTLS_NG = "cert_ng"  # JSON callbacks from a carrier that presents a client certificate
TOKEN = "cb-token-5f0e11c2a9"
SERVICE_SECRETS = {**SECRETS, "TOKEN_NG_CALLBACK_TOKEN": TOKEN}
NUMBER_RANGES = {NG: "+234803555", JSON_NG: "+234803556", BEARER_NG: "+234803557", MTLS_NG: "+234803558"}
JSON_EXTRACT = {"correlator": "$.reference", "carrier_ref": "$.message_id", "status": "$.status",
                "code": "$.error_code", "amount": "$.price", "currency": "$.currency"}


def aggregator_spec() -> dict:
    return spec_for(NG, "http://127.0.0.1:9")


def json_spec(code: str, auth: list[dict]) -> dict:
    """The aggregator with its callbacks in JSON, under another code and number range."""
    spec = copy.deepcopy(aggregator_spec())
    spec.update(code=code, name=f"{code} (test)", number_ranges=[NUMBER_RANGES[code]])
    spec["callbacks"] = {**spec["callbacks"], "path": f"/callbacks/{code}", "encoding": "json", "auth": auth,
                         "extract": JSON_EXTRACT}
    return spec


HMAC_RAW_BODY = [{"type": "signature", "header": "X-Signature", "algorithm": "hmac_sha256",
                  "canonical": "raw_body", "key": {"secret": "AGGREGATOR_NG_CALLBACK_SECRET"}}]
BEARER = [{"type": "bearer", "token": {"secret": "TOKEN_NG_CALLBACK_TOKEN"}}]
MUTUAL_TLS = [{"type": "mutual_tls", "subjects": ["carrierpay adapter"]}]


def form_fields(correlator: str, *, status: str = "ok", price: str = "100.00", code: str = "",
                currency: str = "NGN", message_id: str = "NG-TX-1") -> dict[str, str]:
    """What the aggregator posts back, signed with its callback secret (as in its simulator)."""
    fields = {"message_id": message_id, "reference": correlator, "status": status, "price": price,
              "currency": currency, "error_code": code, "timestamp": "2030-03-04T12:00:00Z"}
    return sign_form(fields)


def sign_form(fields: dict[str, str], secret: str = CALLBACK_SECRET) -> dict[str, str]:
    unsigned = {k: v for k, v in fields.items() if k != "sig"}
    canonical = "&".join(f"{key}={unsigned[key]}" for key in sorted(unsigned))
    return {**unsigned, "sig": hashlib.md5((canonical + secret).encode()).hexdigest()}


def json_body(correlator: str, *, status: str = "ok", price: Any = "100.00", code: str = "",
              message_id: str = "NG-TX-2") -> bytes:
    return json.dumps({"reference": correlator, "message_id": message_id, "status": status, "price": price,
                       "currency": "NGN", "error_code": code}).encode()


def hmac_header(body: bytes, secret: str = CALLBACK_SECRET) -> dict[str, str]:
    return {"X-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def http_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                 content_type: str = "application/x-www-form-urlencoded") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if body or method == "POST":
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def send_raw(port: int, data: bytes, *, ssl_context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """Write a request on a fresh connection and read until the server closes it: (status, whole answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_context,
                                                   server_hostname="127.0.0.1" if ssl_context else None)
    try:
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0
    return status, answer


def post_form(path: str, fields: dict[str, str]) -> bytes:
    return http_request("POST", path, urlencode(fields).encode())


def post_json(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    return http_request("POST", path, body, headers, content_type="application/json")


class CallbackWorld:
    """`async with CallbackWorld(db_url) as world:` the carriers onboarded, a merchant selling on
    each, and `world.server`, a running CallbackServer."""

    def __init__(self, db_url: str, *, specs: list[dict] | None = None, limits: HttpLimits | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.url = db_url
        self.specs = specs if specs is not None else [aggregator_spec()]
        self.limits = limits
        self.ssl_context = ssl_context
        self.server: CallbackServer | None = None
        self.conn: psycopg.AsyncConnection | None = None

    async def __aenter__(self) -> CallbackWorld:
        await asyncio.to_thread(self._setup)
        self.conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        self.server = CallbackServer(self.url, secrets=SERVICE_SECRETS, limits=self.limits,
                                     ssl_context=self.ssl_context)
        await self.server.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self.server is not None:
            await self.server.stop()
        if self.conn is not None:
            await self.conn.close()

    def _setup(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("select admin.set_clock('2030-03-04 12:00+00')")
            conn.execute("select admin.add_merchant('acme', 'Acme Games', null, 1000)")
            conn.execute("select admin.add_product('acme', 'gems', '100 gems')")
            for spec in self.specs:
                conn.execute("select admin.onboard_carrier(%s)", [Jsonb(spec)])
                conn.execute("select admin.add_price_point('acme', 'gems', 'one_time', %s, 'NGN', 'gems_100', %s)",
                             [PRICE, spec["code"]])

    @property
    def port(self) -> int:
        return int(self.server.base_url.rsplit(":", 1)[1])

    async def one(self, sql: str, *params: Any) -> Any:
        cur = await self.conn.execute(sql, params or None)
        row = await cur.fetchone()
        return row[0] if row else None

    async def charge(self, carrier: str, n: int) -> tuple[int, str]:
        """A one-time charge for a subscriber of the carrier: (payment id, its call's correlator)."""
        msisdn = NUMBER_RANGES[carrier] + str(n).zfill(13 - len(NUMBER_RANGES[carrier]))
        document = await self.one("select api.charge('acme', %s, 'gems', %s)", msisdn, f"k-{carrier}-{n}")
        correlator = await self.one("select correlator from cp.carrier_call where procedure_id = %s", document["id"])
        return document["id"], correlator

    async def send(self, carrier: str) -> int:
        """What an adapter does before it sends: lease the carrier's queued calls. How many."""
        cur = await self.conn.execute("select adapter.claim_calls(%s, 100, interval '5 minutes', 'attacker-test')",
                                      [carrier])
        return len(await cur.fetchall())

    async def state(self, payment: int) -> dict[str, Any]:
        """Everything a callback could have changed about one payment."""
        cur = await self.conn.execute(
            """select p.status::text, p.collected_minor, c.status::text,
                      exists (select 1 from cp.call_queue q where q.call_id = c.call_id),
                      (select count(*) from cp.journal j where j.procedure_id = p.procedure_id),
                      (select count(*) from cp.entitlement e where e.procedure_id = p.procedure_id)
               from cp.procedure p join cp.carrier_call c using (procedure_id) where p.procedure_id = %s""",
            [payment])
        row = await cur.fetchone()
        return dict(zip(("payment", "collected", "call", "in_queue", "journals", "entitlements"), row, strict=True))

    async def ledger_total(self) -> int:
        return await self.one("select coalesce(sum(abs(amount_minor)), 0)::bigint from cp.ledger_entry")

    async def conflicts(self, payment: int) -> list[tuple]:
        cur = await self.conn.execute(
            "select kind, call_status_then::text, reported_outcome from report.call_conflicts "
            "where procedure_id = %s order by conflict_id", [payment])
        return await cur.fetchall()
