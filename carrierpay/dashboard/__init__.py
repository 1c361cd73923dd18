"""`carrierpay dashboard`: a live web page of the platform, read from the report views.

The page (`page.html`) draws its charts with uPlot, vendored under `static/uplot/` (no CDN at run
time), and asks `/api/data?from=…&to=…` every few seconds. Everything it shows comes from the
rollups and the `report.*` views (`carrierpay/queries.py`, `DASHBOARD_*`).

Authentication is the operators' own: HTTP Basic with a PostgreSQL login and password, checked by
PostgreSQL itself (the dashboard connects as that login for each request). The login must be a
member of `carrierpay_reporter` or `carrierpay_admin`; the dashboard then reads in a read-only
transaction, as `carrierpay_reporter` when the login is a member of it. Bind it to 127.0.0.1 (the
default) or put it behind TLS: Basic credentials travel in clear over plain HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
from aiohttp import web
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from carrierpay import queries

log = logging.getLogger("carrierpay.dashboard")

HERE = Path(__file__).parent
RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
MAX_RANGE = timedelta(days=400)
REALM = 'Basic realm="carrierpay dashboard", charset="UTF-8"'


class Unauthorized(Exception):
    """No, or wrong, credentials."""


def _json_value(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def _rows(cur: psycopg.Cursor, rows: list[tuple]) -> list[dict]:
    names = [column.name for column in cur.description]
    return [{name: _json_value(value) for name, value in zip(names, row, strict=True)} for row in rows]


def credentials(header: str | None) -> tuple[str, str]:
    """The login and password of an `Authorization: Basic …` header."""
    if not header or not header.startswith("Basic "):
        raise Unauthorized("credentials required")
    try:
        user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Unauthorized("unreadable credentials") from None
    if not user or not password or len(user) > 63 or len(password) > 1024 or "\x00" in user + password:
        raise Unauthorized("credentials required")
    return user, password


class Dashboard:
    def __init__(self, database_url: str, *, refresh_s: float = 5.0) -> None:
        params = conninfo_to_dict(database_url)
        # The server and database of the deployment; who logs in is the visitor.
        self.base = {key: value for key, value in params.items() if key not in ("user", "password", "passfile")}
        self.refresh_s = refresh_s

    async def _connect(self, user: str, password: str) -> psycopg.AsyncConnection:
        try:
            conn = await psycopg.AsyncConnection.connect(
                make_conninfo(**self.base, user=user, password=password), connect_timeout=5,
                application_name="carrierpay dashboard")
        except psycopg.OperationalError as exc:
            text = str(exc)
            if "password authentication failed" in text or "does not exist" in text or "no password" in text:
                raise Unauthorized("wrong login or password") from None
            raise
        return conn

    async def session(self, user: str, password: str) -> psycopg.AsyncConnection:
        """A connection as the visitor, checked to be a reader, reading only (as the reporter when a member)."""
        conn = await self._connect(user, password)
        try:
            cur = await conn.execute(queries.DASHBOARD_MAY_READ)
            reporter, admin = await cur.fetchone()
            if not (reporter or admin):
                raise PermissionError("this login may not read reports")
            await conn.rollback()
            await conn.set_read_only(True)
            if reporter:
                await conn.execute(queries.DASHBOARD_AS_REPORTER)
            await conn.execute(queries.READ_WITHOUT_JIT)
            return conn
        except BaseException:
            await conn.close()
            raise

    async def read(self, user: str, password: str, start: datetime | None, end: datetime | None,
                   span: timedelta) -> dict:
        conn = await self.session(user, password)
        try:
            cur = await conn.execute(queries.DASHBOARD_CLOCK)
            now, folded_at = await cur.fetchone()
            end = end or now
            start = start or end - span
            window = {"from": start, "to": end}
            data: dict = {"now": _json_value(now), "folded_at": _json_value(folded_at),
                          "from": _json_value(start), "to": _json_value(end), "refresh_s": self.refresh_s}
            for key, sql, params in (("success", queries.DASHBOARD_SUCCESS, window),
                                     ("revenue", queries.DASHBOARD_REVENUE, window),
                                     ("totals", queries.DASHBOARD_TOTALS, window),
                                     ("best_hours", queries.DASHBOARD_BEST_HOURS, None),
                                     ("carriers", queries.DASHBOARD_CARRIERS, None),
                                     ("unsettled", queries.DASHBOARD_UNSETTLED, None)):
                cur = await conn.execute(sql, params)
                data[key] = _rows(cur, await cur.fetchall())
            data["alerts"] = alerts(data)
            return data
        finally:
            await conn.close()


def alerts(data: dict) -> list[dict]:
    """What needs an operator now, from what the page already read (the same conditions as the
    Prometheus rules in deploy/prometheus/alerts.yml that the database alone can tell)."""
    found = []
    for row in data["carriers"]:
        if row["breaker_state"] == "open":
            found.append({"carrier": row["carrier"], "alert": "CarrierBreakerOpen",
                          "text": "circuit breaker open: calls held, probed"})
        if row["paused"]:
            found.append({"carrier": row["carrier"], "alert": "CarrierPaused", "text": "paused by an operator"})
        if row["oldest_ready_s"] and row["oldest_ready_s"] > 300 and not row["paused"]:
            found.append({"carrier": row["carrier"], "alert": "QueueNotDraining",
                          "text": f"oldest ready call waited {int(row['oldest_ready_s'])} s"})
    for row in data["unsettled"]:
        if row["overdue"]:
            found.append({"carrier": row["carrier"], "alert": "CallsStuckUnknown",
                          "text": f"{row['overdue']} {row['status']} call(s) past their reconciliation time"})
    return found


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise web.HTTPBadRequest(text="from and to are ISO 8601 times") from None
    if parsed.tzinfo is None:
        raise web.HTTPBadRequest(text="from and to need a time zone (e.g. 2030-03-04T12:00Z)")
    return parsed


def make_app(database_url: str, *, refresh_s: float = 5.0) -> web.Application:
    dashboard = Dashboard(database_url, refresh_s=refresh_s)
    page = (HERE / "page.html").read_text()

    def login(request: web.Request) -> tuple[str, str]:
        try:
            return credentials(request.headers.get("Authorization"))
        except Unauthorized as exc:
            raise web.HTTPUnauthorized(text=str(exc), headers={"WWW-Authenticate": REALM}) from None

    async def checked(request: web.Request) -> None:
        """Every answer, the page and the chart library included, only to a login that may read reports."""
        user, password = login(request)
        conn = await guarded(dashboard.session(user, password))
        await conn.close()

    async def index(request: web.Request) -> web.Response:
        await checked(request)
        return web.Response(text=page, content_type="text/html", headers=_NO_STORE)

    async def data_for(user, password, start, end, span) -> dict:
        return await guarded(dashboard.read(user, password, start, end, span))

    async def guarded(work):
        try:
            return await work
        except Unauthorized as exc:
            raise web.HTTPUnauthorized(text=str(exc), headers={"WWW-Authenticate": REALM}) from None
        except PermissionError as exc:
            raise web.HTTPForbidden(text=str(exc)) from None
        except psycopg.OperationalError:
            log.warning("dashboard: database unavailable", exc_info=True)
            raise web.HTTPServiceUnavailable(text="database unavailable") from None

    async def api_data(request: web.Request) -> web.Response:
        user, password = login(request)
        start, end = _parse_time(request.query.get("from")), _parse_time(request.query.get("to"))
        span = RANGES.get(request.query.get("range", "24h"))
        if span is None:
            raise web.HTTPBadRequest(text=f"range is one of {', '.join(RANGES)}")
        if start and end and not (start < end and end - start <= MAX_RANGE):
            raise web.HTTPBadRequest(text="from must be before to, at most 400 days apart")
        return web.json_response(await data_for(user, password, start, end, span), headers=_NO_STORE)

    async def static(request: web.Request) -> web.FileResponse:
        await checked(request)
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return web.FileResponse(HERE / "static" / "uplot" / name)

    app = web.Application(client_max_size=4096)
    app.router.add_get("/", index)
    app.router.add_get("/api/data", api_data)
    app.router.add_get("/static/uplot/{name}", static)
    return app


_STATIC = ("uPlot.iife.min.js", "uPlot.min.css", "LICENSE")
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
             "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                        "script-src 'self' 'unsafe-inline'; img-src 'self' data:"}


async def serve(database_url: str, *, host: str = "127.0.0.1", port: int = 8700, refresh_s: float = 5.0,
                stop: asyncio.Event | None = None, started=None) -> None:
    """Serve until `stop`; `started(port)` is called once listening."""
    runner = web.AppRunner(make_app(database_url, refresh_s=refresh_s), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]
    log.info("dashboard on http://%s:%d/", host, bound)
    if started is not None:
        started(bound)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()
