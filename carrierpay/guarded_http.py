"""Serve an aiohttp application to the internet with bounds on what one client can hold.

aiohttp reads request headers and bodies for as long as a client cares to send them, and accepts
as many connections as the process has descriptors, so a few slow clients (partial headers, a
body trickled a byte at a time, connections opened and left silent) can take a server out of
service. `GuardedListener` puts its own protocol in front of aiohttp's request handler:

- at most `max_connections` connections are open; one more is closed as soon as it is accepted;
- a connection must deliver a request's headers within `header_timeout_s` of its first byte (or of
  being opened), and the TLS handshake must end within that time too;
- a connection kept alive between requests is closed after `idle_timeout_s` without a new one;
- the middleware reads every request body before the handler runs, within `body_timeout_s`
  (answered 408 and closed when too slow) and within `max_body_bytes` (413, aiohttp's own limit);
- a malformed body (bad chunked encoding, a length that does not match) is answered 400 with
  one log line, and so are malformed request lines and headers, which aiohttp answers itself.

Only aiohttp's public pieces are used: `AppRunner.server` is the protocol factory that
`loop.create_server` takes, and middlewares see `request.transport`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from psycopg_pool import AsyncConnectionPool

from carrierpay import queries

log = logging.getLogger("carrierpay.http")


@dataclass(frozen=True)
class HttpLimits:
    """What one client may hold of a server. The defaults suit carriers calling back a few times a
    second over the internet; tests shorten the timeouts."""

    max_connections: int = 256
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0
    max_body_bytes: int = 256 * 1024


class _OneLineForBadRequests(logging.LoggerAdapter):
    """aiohttp logs a request it cannot parse with a traceback; a malformed request is the client's
    fault, so it gets one line. Anything else keeps its traceback."""

    def exception(self, msg: Any, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self.logger.warning(msg + ": %s", *args, _short(exc_info), **kwargs)
        else:
            self.logger.error(msg, *args, exc_info=exc_info, **kwargs)


def _short(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {str(text).splitlines()[0][:200] if text else ''}"


class _Connection(asyncio.Protocol):
    """One accepted connection: forwards everything to aiohttp's request handler and keeps the
    deadline that applies to what the connection is doing now."""

    def __init__(self, listener: GuardedListener) -> None:
        self._listener = listener
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._state = "new"  # new | idle | headers | busy

    # asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        listener = self._listener
        if len(listener.open) >= listener.limits.max_connections:
            listener.counts["refused"] += 1
            log.debug("connection from %s refused: %d open", _peer(transport), len(listener.open))
            transport.abort()
            return
        listener.open[transport] = self
        self._inner = listener.handler_factory()
        self._inner.connection_made(transport)
        self._arm(listener.limits.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._state in ("new", "idle"):
            self._state = "headers"
            self._arm(self._listener.limits.header_timeout_s)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self._listener.open.pop(self._transport, None)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # deadlines ----------------------------------------------------------------------------

    def request_started(self) -> None:
        """The headers are in: the handler (and the body's own timeout) take over."""
        self._state = "busy"
        self._cancel()

    def request_finished(self) -> None:
        self._state = "idle"
        self._arm(self._listener.limits.idle_timeout_s)

    def _arm(self, seconds: float) -> None:
        self._cancel()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._state == "busy" or self._transport is None or self._transport.is_closing():
            return
        self._listener.counts["timed_out"] += 1
        log.info("connection from %s closed: %s", _peer(self._transport),
                 "idle between requests" if self._state == "idle" else "request headers not received in time")
        self._transport.abort()


def _peer(transport: asyncio.BaseTransport | None) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple | list) and peer else "?"


class GuardedListener:
    """Accepts connections for an aiohttp runner under `HttpLimits`.

    Use: build the Application with `middlewares=[listener.middleware]` and
    `client_max_size=limits.max_body_bytes`, make the runner with `**listener.runner_options()`,
    `await runner.setup()`, then `await listener.start(runner, host, port, ssl_context)`; stop with
    `await listener.stop(runner)`.
    """

    def __init__(self, limits: HttpLimits | None = None) -> None:
        self.limits = limits or HttpLimits()
        self.open: dict[asyncio.BaseTransport, _Connection] = {}
        self.counts = {"refused": 0, "timed_out": 0, "bad_request": 0}
        self.handler_factory: Callable[[], asyncio.Protocol] = _no_runner
        self._server: asyncio.AbstractServer | None = None

    def runner_options(self) -> dict[str, Any]:
        return {
            "access_log": None,
            # aiohttp's own idle close is only a backstop behind the deadlines kept here.
            "keepalive_timeout": self.limits.idle_timeout_s + self.limits.header_timeout_s,
            "lingering_time": min(self.limits.body_timeout_s, 2.0),
            "logger": _OneLineForBadRequests(logging.getLogger("aiohttp.server"), {}),
        }

    async def start(self, runner: web.BaseRunner, host: str, port: int,
                    ssl_context: ssl.SSLContext | None = None, *, reuse_port: bool = False) -> tuple[str, int]:
        """Listen; returns the bound (host, port). `reuse_port`: several processes listen on the port."""
        if runner.server is None:
            raise RuntimeError("set the runner up before starting the listener")
        self.handler_factory = runner.server
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self), host, port, ssl=ssl_context, backlog=128, reuse_port=reuse_port or None,
            ssl_handshake_timeout=self.limits.header_timeout_s if ssl_context else None,
        )
        address = self._server.sockets[0].getsockname()
        return address[0], address[1]

    async def stop(self, runner: web.BaseRunner | None = None) -> None:
        """Stop accepting, then let the runner close the open connections."""
        if self._server is not None:
            self._server.close()
        if runner is not None:
            await runner.cleanup()
        for transport in list(self.open):
            transport.abort()
        self._server = None

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        connection = self.open.get(request.transport) if request.transport is not None else None
        if connection is not None:
            connection.request_started()
        try:
            if request.body_exists:
                try:
                    async with asyncio.timeout(self.limits.body_timeout_s):
                        await request.read()
                except TimeoutError:
                    self.counts["timed_out"] += 1
                    log.info("request from %s closed: body not received within %ss", request.remote,
                             self.limits.body_timeout_s)
                    response = web.Response(status=408, text="request body too slow")
                    response.force_close()
                    return response
                except HttpProcessingError as exc:
                    self.counts["bad_request"] += 1
                    log.warning("request from %s %s: malformed body (%s)", request.remote, request.path[:80],
                                _short(exc))
                    response = web.Response(status=400, text="malformed request")
                    response.force_close()
                    return response
            return await handler(request)
        finally:
            if connection is not None:
                connection.request_finished()


def _no_runner() -> asyncio.Protocol:
    raise RuntimeError("GuardedListener.start was not called")


class GuardedServer:
    """A database-backed aiohttp server behind a `GuardedListener`: a connection pool opened on
    `start()`, the application from `app()` (a subclass's routes) and the same close order on
    `stop()` for every server the project puts on the internet. Used as `async with`."""

    def __init__(self, url: str, *, host: str, port: int, ssl_context: ssl.SSLContext | None,
                 pool_size: int, limits: HttpLimits | None, reuse_port: bool = False) -> None:
        self.url = url
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.reuse_port = reuse_port
        self.pool = AsyncConnectionPool(url, min_size=1, max_size=pool_size, open=False,
                                        kwargs={"autocommit": True})
        self.listener = GuardedListener(limits)
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        raise NotImplementedError

    async def log_counts_until(self, stop: asyncio.Event, logger: logging.Logger, label: str) -> None:
        """Wait for `stop`, logging every minute what this server and its listener counted (`self.counts`:
        what the subclass answered)."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=60)
            except TimeoutError:
                counts = {**self.counts, **self.listener.counts}
                logger.info("%s: %s", label, " ".join(f"{k}={v}" for k, v in counts.items()))

    async def health(self, request: web.Request) -> web.Response:
        """GET /health: every answer these servers give comes from the database, so they are healthy
        while it answers."""
        try:
            async with self.pool.connection(timeout=2) as conn:
                await conn.execute(queries.PING)
        except Exception:  # any failure means not healthy
            return web.Response(status=503, text="database unavailable")
        return web.Response(text="ok")

    async def start(self) -> Self:
        await self.pool.open(wait=False)
        self._runner = web.AppRunner(self.app(), shutdown_timeout=1.0, **self.listener.runner_options())
        await self._runner.setup()
        host, port = await self.listener.start(self._runner, self.host, self.port, self.ssl_context,
                                               reuse_port=self.reuse_port)
        self.base_url = f"{'https' if self.ssl_context else 'http'}://{host}:{port}"
        return self

    async def stop(self) -> None:
        await self.listener.stop(self._runner)
        self._runner = None
        await self.pool.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()
