"""The dashboard as a stranger, a merchant and a viewer meet it over raw HTTP: no page, data or chart
library without a database login; wrong passwords and merchant logins are refused; a reporter login
reads, only reads, and sees what the report views hold."""

from __future__ import annotations

import asyncio
import base64
import uuid

import aiohttp
import psycopg
from psycopg import sql

from carrierpay.dashboard import serve


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def _with_dashboard(url: str, body) -> None:
    stop = asyncio.Event()
    ready = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(serve(url, port=0, stop=stop, started=ready.set_result))
    port = await asyncio.wait_for(ready, 20)
    try:
        async with aiohttp.ClientSession() as session:
            await body(session, f"http://127.0.0.1:{port}")
    finally:
        stop.set()
        await task


def _viewer(owner: psycopg.Connection) -> tuple[str, str]:
    name, password = f"viewer_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    owner.execute(sql.SQL("create role {} login password {} in role carrierpay_reporter").format(
        sql.Identifier(name), sql.Literal(password)))
    return name, password


async def test_only_a_reporter_login_gets_the_page_and_its_data(world_url, owner, attacker):
    owner.execute("select api.charge('acme', '+2348020000002', 'gems', 'd-0')")
    [call] = owner.execute("select adapter.claim_calls('test_ng', 10, interval '1 minute', 'w')").fetchone()
    owner.execute("select adapter.complete_calls(jsonb_build_array(jsonb_build_object('call_id', %s::bigint, "
                  "'outcome', 'succeeded')))", [call["call_id"]])
    owner.execute("select sched.fold_rollups()")
    owner.execute("select api.charge('acme', '+2348020000001', 'gems', 'd-1')")
    owner.execute("select adapter.claim_calls('test_ng', 10, interval '1 minute', 'w')")
    viewer, password = _viewer(owner)

    async def body(session: aiohttp.ClientSession, base: str) -> None:
        for path in ("/", "/api/data", "/static/uplot/uPlot.iife.min.js"):
            async with session.get(base + path) as response:
                assert response.status == 401 and "Basic" in response.headers["WWW-Authenticate"]
            async with session.get(base + path, headers=_basic(viewer, "wrong")) as response:
                assert response.status == 401
            async with session.get(base + path, headers={"Authorization": "Basic !!!"}) as response:
                assert response.status == 401
        async with session.get(base + "/api/data", headers=_basic(attacker.role, attacker.password)) as response:
            assert response.status == 403  # a merchant's own login reads no report
        async with session.get(base + "/", headers=_basic(viewer, password)) as response:
            assert response.status == 200 and "uPlot" in await response.text()
            assert response.headers["Cache-Control"] == "no-store"
        async with session.get(base + "/static/uplot/uPlot.iife.min.js", headers=_basic(viewer, password)) as r:
            assert r.status == 200 and len(await r.read()) > 10_000
        async with session.get(base + "/static/uplot/..%2F..%2F__init__.py", headers=_basic(viewer, password)) as r:
            assert r.status == 404
        async with session.get(base + "/api/data?range=7d", headers=_basic(viewer, password)) as response:
            assert response.status == 200, await response.text()
            data = await response.json()
        assert {row["carrier"] for row in data["carriers"]} == {"test_gb", "test_ng"}
        assert data["totals"] == [{"carrier": "test_ng", "attempts": 1, "succeeded": 1, "renewals": 0, "retries": 0,
                                   "step_downs": 0}]
        leased = {row["carrier"]: (row["queue_ready"], row["leased"]) for row in data["carriers"]}
        assert leased == {"test_gb": (0, 0), "test_ng": (0, 1)}  # the charge claimed above
        async with session.get(base + "/api/data?from=2030-01-01T00:00&to=x", headers=_basic(viewer, password)) as r:
            assert r.status == 400

    await _with_dashboard(world_url, body)


async def test_the_dashboard_reads_only(world_url, owner):
    """Even an admin login's session is read-only: the page has no way to write, and its transaction refuses."""
    viewer, password = _viewer(owner)
    with psycopg.connect(world_url.replace(world_url.split("@")[0].split("//")[1], f"{viewer}:{password}"),
                         autocommit=True) as conn, conn.transaction():
        conn.execute("set transaction read only")
        try:
            conn.execute("select admin.pause_sending('carrier', 'test_ng')")
        except psycopg.Error as exc:
            assert exc.sqlstate in ("42501", "25006")
        else:
            raise AssertionError("a viewer paused a carrier")
