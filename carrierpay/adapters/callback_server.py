"""`carrierpay callbacks serve`: the HTTP(S) endpoint carriers call back with asynchronous results.

    POST|GET /callbacks/{carrier}     a carrier's result callback (the spec's `callbacks` section)
    POST|GET /mo/{carrier}            a subscriber's SMS the carrier forwards (the spec's `mo` section)
    GET      /health                  200 when the database answers

Each callback is authenticated and only then read by `verify_and_parse_callback` (signature,
Basic, bearer, client certificate, source IP, per the spec), then recorded with
`adapter.record_callback`, which is idempotent: carriers retry until they get a 200, send
duplicates, and call back before or after our synchronous answer, and every one of those lands
once. The server answers 200 only after the database has the callback; 403 for a failed
authentication and 400 for a malformed or unreadable callback (both one log line, nothing
written); 404 for a carrier we do not know; 503 when the database is unavailable or a secret the
check needs is not set, so the carrier retries.

The listener (`carrierpay.guarded_http`) bounds what one client can hold: connections, the time to
send headers and body, idle keep-alive, body size.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from aiohttp import web
from prometheus_client import Counter
from psycopg.types.json import Jsonb

from carrierpay import metrics, queries
from carrierpay.adapters.auth import TlsConfigError
from carrierpay.adapters.callbacks import (
    CallbackError,
    PeerCertificate,
    verify_and_parse_callback,
    verify_and_parse_mo,
)
from carrierpay.adapters.secrets import Secrets
from carrierpay.adapters.spec import CarrierSpec, SpecError, load_spec
from carrierpay.errors import BadCallback, InvalidArgument, translate
from carrierpay.guarded_http import GuardedServer, HttpLimits
from carrierpay.lifecycle import install_stop_handlers

log = logging.getLogger("carrierpay.callbacks")
SPEC_CACHE_SECONDS = 30.0
SPEC_CACHE_SIZE = 1024  # carrier codes remembered, unknown ones included: a client picks the names
CARRIER_CODE = re.compile(r"^[a-z0-9_]{1,63}$")


class CallbackServer(GuardedServer):
    """An aiohttp application bound to the database; `start()` listens, `stop()` closes."""

    def __init__(
        self,
        url: str,
        *,
        secrets: Secrets | Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        pool_size: int = 4,
        limits: HttpLimits | None = None,
    ) -> None:
        super().__init__(url, host=host, port=port, ssl_context=ssl_context, pool_size=pool_size, limits=limits)
        self.secrets = Secrets.of(secrets)
        self._specs: dict[str, tuple[float, CarrierSpec | None]] = {}
        self._parsed: dict[str, tuple[Any, CarrierSpec]] = {}
        self.counts = {"recorded": 0, "duplicate": 0, "rejected": 0, "unreadable": 0, "unmatched": 0,
                       "conflict": 0, "not_sent": 0, "mo": 0}

    # ------------------------------------------------------------------ lifecycle

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.listener.limits.max_body_bytes,
                              middlewares=[self.listener.middleware])
        app.router.add_route("*", "/callbacks/{carrier}", self.handle)
        app.router.add_route("*", "/mo/{carrier}", self.handle_mo)
        app.router.add_get("/health", self.health)
        return app

    def callback_url(self, carrier: str) -> str:
        return f"{self.base_url}/callbacks/{carrier}"

    # ------------------------------------------------------------------ handlers

    async def _spec(self, code: str) -> CarrierSpec | None:
        now = asyncio.get_running_loop().time()
        cached = self._specs.get(code)
        if cached and now - cached[0] < SPEC_CACHE_SECONDS:
            return cached[1]
        async with self.pool.connection() as conn:
            cur = await conn.execute(queries.CARRIER_SPEC, {"carrier": code})
            row = await cur.fetchone()
        spec = None
        if row is not None:
            # Validating a spec costs far more than reading it: do it again only when it changed.
            parsed = self._parsed.get(code)
            if parsed is not None and parsed[0] == row[0]:
                spec = parsed[1]
            else:
                try:
                    spec = load_spec(row[0])
                    self._parsed[code] = (row[0], spec)
                except SpecError as exc:
                    log.error("callbacks for %s cannot be read: stored spec is invalid: %s", code, exc)
        if len(self._specs) >= SPEC_CACHE_SIZE:
            self._specs.clear()
        self._specs[code] = (now, spec)
        return spec

    async def _named_spec(self, request: web.Request, what: str) -> CarrierSpec | web.Response | None:
        """The spec of the carrier the path names (None: no such carrier), or the answer to give when the
        database cannot say."""
        code = request.match_info["carrier"]
        if not CARRIER_CODE.match(code):
            return None
        try:
            return await self._spec(code)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            log.warning("%s for %s: database unavailable (%s); asking the carrier to retry", what, code, exc)
            return web.Response(status=503, text="try again")

    async def _verified(self, verify: Callable[..., dict[str, Any]], spec: CarrierSpec, request: web.Request,
                        what: str, metric: Counter | None = None) -> dict[str, Any] | web.Response:
        """What `verify` (verify_and_parse_callback or _mo) reads from the request, or the answer to a request
        it refuses: 403 rejected, 400 unreadable (both counted, in `metric` too when given), 503 when a
        secret it needs is not set."""
        code = request.match_info["carrier"]
        body = await request.read()  # already read by the listener's middleware, within its limits
        try:
            return verify(spec, request.method, request.headers, request.query, body, request.remote,
                          secrets=self.secrets, peer_cert=_peer_certificate(request))
        except CallbackError as exc:
            if exc.status == 503:
                log.error("%s for %s cannot be checked: %s", what, code, exc)
                return web.Response(status=503, text="try again")
            kind = "rejected" if exc.status == 403 else "unreadable"
            self.counts[kind] += 1
            if metric is not None:
                metric.labels(result=kind).inc()
            log.warning("%s for %s from %s %s: %s", what, code, request.remote, kind, exc)
            return web.Response(status=exc.status, text=kind)

    async def _record(self, sql: str, params: dict[str, Any]) -> dict[str, Any]:
        """What the database answers to recording a callback or an MO (its one value)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql, params)
            return (await cur.fetchone())[0]

    async def handle(self, request: web.Request) -> web.Response:
        code = request.match_info["carrier"]
        spec = await self._named_spec(request, "callback")
        if isinstance(spec, web.Response):
            return spec
        if spec is None:
            log.warning("callback for unknown carrier %r from %s", code[:70], request.remote)
            return web.Response(status=404, text="unknown carrier")
        parsed = await self._verified(verify_and_parse_callback, spec, request, "callback", metrics.CALLBACKS)
        if isinstance(parsed, web.Response):
            return parsed
        payload = {key: value for key, value in parsed.items() if value is not None}
        try:
            answer = await self._record(queries.RECORD_CALLBACK, {"carrier": code, "payload": Jsonb(payload)})
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            log.warning("callback for %s not recorded, database unavailable (%s)", code, exc)
            metrics.ERRORS.labels(daemon="callbacks", kind="database_unavailable").inc()
            return web.Response(status=503, text="try again")
        except psycopg.Error as exc:
            # The database refuses what no check here caught: the callback's fault, not the server's.
            if isinstance(exc, psycopg.DataError) or isinstance(translate(exc), BadCallback | InvalidArgument):
                self.counts["unreadable"] += 1
                metrics.CALLBACKS.labels(result="unreadable").inc()
                message = exc.diag.message_primary if exc.diag and exc.diag.message_primary else type(exc).__name__
                log.warning("callback for %s from %s unreadable: %s", code, request.remote, message[:200])
                return web.Response(status=400, text="unreadable")
            raise
        status = answer.get("status")
        key = status if status in ("duplicate", "unmatched", "conflict", "not_sent") else "recorded"
        self.counts[key] += 1
        metrics.CALLBACKS.labels(result=key).inc()
        if key in ("conflict", "not_sent"):
            log.warning("callback for %s %s names call %s but contradicts it (%s): recorded in report.call_conflicts",
                        code, parsed["correlator"][:64], answer.get("call_id"), status)
        else:
            log.debug("callback %s %s: %s", code, parsed["correlator"], status)
        return web.Response(text="OK")

    async def handle_mo(self, request: web.Request) -> web.Response:
        """A subscriber's SMS (keyword, YES, STOP, HELP, BUY) forwarded by an HTTP carrier: authenticated per
        the spec's `mo` section, then acted on by `adapter.record_mo`, the same as an MO over SMPP."""
        code = request.match_info["carrier"]
        spec = await self._named_spec(request, "MO")
        if isinstance(spec, web.Response):
            return spec
        if spec is None or not spec.data.get("mo"):
            log.warning("MO for unknown carrier %r (or one that forwards none) from %s", code[:70], request.remote)
            return web.Response(status=404, text="unknown carrier")
        mo = await self._verified(verify_and_parse_mo, spec, request, "MO")
        if isinstance(mo, web.Response):
            return mo
        try:
            answer = await self._record(queries.RECORD_MO, {"carrier": code, "mo": Jsonb(mo)})
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            log.warning("MO for %s not recorded, database unavailable (%s)", code, exc)
            return web.Response(status=503, text="try again")
        self.counts["mo"] += 1
        log.debug("MO %s: %s", code, answer.get("status"))
        return web.Response(text="OK")


def _peer_certificate(request: web.Request) -> PeerCertificate | None:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    return PeerCertificate.from_ssl(ssl_object.getpeercert(), ssl_object.getpeercert(binary_form=True))


def server_ssl_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """The HTTPS context of the callback server: our certificate chain and its private key (PEM), and,
    with `client_ca`, the CA bundle that signs carriers' client certificates (checks of type
    `mutual_tls`). A client certificate is then asked for but not required, since other carriers
    authenticate otherwise; one that is presented must verify against that bundle. Raises
    TlsConfigError, naming the files, when they cannot be read or do not belong together."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"callback server certificate {cert} / key {key}: {exc}") from exc
    if client_ca:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"callback server client CA {client_ca}: {exc}") from exc
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


async def serve(
    url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    cert: str | None = None,
    key: str | None = None,
    client_ca: str | None = None,
    limits: HttpLimits | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until stopped (SIGTERM/SIGINT), logging counts every minute."""
    stop = stop or asyncio.Event()
    install_stop_handlers(stop)
    context = server_ssl_context(cert, key, client_ca) if cert and key else None
    async with CallbackServer(url, host=host, port=port, ssl_context=context, limits=limits) as server:
        log.info("callback server listening on %s/callbacks/{carrier}", server.base_url)
        await server.log_counts_until(stop, log, "callbacks")
