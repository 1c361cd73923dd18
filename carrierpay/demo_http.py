"""The demo's HTTP merchant: it integrates the way a merchant that never logs in to the database does,
through `carrierpay api serve` with an OAuth2 client (bearer tokens, renewed when refused), CAMARA
payments and refunds with a `sink` for their outcomes, and carrierpay's `/subscriptions` and
`/consents`. Its sink is a local HTTPS receiver with a certificate made for the run, which the
demo's webhook dispatcher is told to trust."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import ssl
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from carrierpay.loopback_http import LoopbackServer

CONCURRENCY = 16  # requests in flight at once from the merchant's backend
SINK_TOKEN = "demo-sink-token"  # what the merchant's sink expects as the bearer of every notification


def major(amount_minor: int, exponent: int) -> str:
    """A CAMARA amount, written as decimal text so it never passes through a binary float."""
    return f"{Decimal(amount_minor).scaleb(-exponent):.{exponent}f}"


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, valid for two days: the sink's, trusted only by this run."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "sink.pem", directory / "sink.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def dumps(body: Any) -> str:
    """JSON text with every Decimal written as the number it is (json would refuse it or go through a float)."""
    numbers: list[str] = []

    def default(value: Any) -> str:
        if isinstance(value, Decimal):
            numbers.append(str(value))
            return f"\x00{len(numbers) - 1}\x00"
        raise TypeError(f"{type(value).__name__} is not JSON")

    text = json.dumps(body, default=default)
    return re.sub(r'"\\u0000(\d+)\\u0000"', lambda found: numbers[int(found.group(1))], text)


class Sink(LoopbackServer):
    """The HTTP merchant's notification endpoint: CloudEvents over HTTPS, each with the sink's bearer."""

    path = "/camara"

    def __init__(self, cert: Path, key: Path) -> None:
        self.ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ssl_context.load_cert_chain(cert, key)
        self.kinds: Counter = Counter()
        self.seen: set[str] = set()
        self.duplicates = 0
        self.unauthorized = 0
        self.paid: list[str] = []  # payment ids the sink was told were completed

    def routes(self, app: web.Application) -> None:
        app.router.add_post(self.path, self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {SINK_TOKEN}":
            self.unauthorized += 1
            return web.Response(status=401)
        event = json.loads(await request.read())
        if event["id"] in self.seen:
            self.duplicates += 1
            return web.Response(status=204)
        self.seen.add(event["id"])
        self.kinds[event["type"].rsplit(".", 1)[-1]] += 1
        data = event.get("data") or {}
        if event["type"].endswith("payment-completed") and data.get("status") == "succeeded":
            self.paid.append(data["paymentId"])
        return web.Response(status=204)


class HttpMerchant:
    """One merchant's backend talking to the API server; every answer is (status, document)."""

    def __init__(self, base_url: str, client: dict, sink: Sink) -> None:
        self.base_url = base_url
        self.client = client
        self.sink = sink
        self.session: aiohttp.ClientSession | None = None
        self.token = ""
        self.tokens = 0
        self.requests: Counter = Counter()  # "status code" -> count
        self._slots = asyncio.Semaphore(CONCURRENCY)

    async def start(self) -> HttpMerchant:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY))
        await self.renew_token()
        return self

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def renew_token(self) -> None:
        auth = aiohttp.BasicAuth(self.client["client_id"], self.client["client_secret"])
        async with self.session.post(f"{self.base_url}/oauth2/token", auth=auth,
                                     data={"grant_type": "client_credentials"}) as response:
            response.raise_for_status()
            self.token = (await response.json())["access_token"]
        self.tokens += 1

    def sink_fields(self) -> dict[str, Any]:
        return {"sink": self.sink.url, "sinkCredential": {
            "credentialType": "ACCESSTOKEN", "accessToken": SINK_TOKEN, "accessTokenType": "bearer",
            "accessTokenExpiresUtc": (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}}

    async def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        """One request; a token refused as expired is renewed once (tokens live 15 minutes)."""
        async with self._slots:
            for attempt in (1, 2):
                headers = {"Authorization": f"Bearer {self.token}"}
                if body is not None:
                    headers["Content-Type"] = "application/json"
                async with self.session.request(method, self.base_url + path, headers=headers,
                                                data=None if body is None else dumps(body)) as response:
                    status = response.status
                    document = await response.json(content_type=None) if status != 204 else None
                if status == 401 and attempt == 1:
                    await self.renew_token()
                    continue
                self.requests[str(status)] += 1
                return status, document
        raise AssertionError("unreachable")

    async def many(self, method: str, requests: list[tuple[str, dict | None]]) -> list[tuple[int, Any]]:
        return list(await asyncio.gather(*(self.call(method, path, body) for path, body in requests)))
