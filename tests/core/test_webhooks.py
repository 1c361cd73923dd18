"""Merchant webhooks: signed, delivered at least once, retried with back-off on failure."""

from __future__ import annotations

import asyncio
import json
from ipaddress import ip_network

import psycopg
import pytest
from aiohttp import web

from carrierpay import webhooks
from tests.core.world import claim, load_world, settle

pytestmark = pytest.mark.sql_api


async def _receiver(statuses: list[int]):
    received = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        received.append((dict(request.headers), body))
        return web.Response(status=statuses.pop(0) if statuses else 200)

    app = web.Application()
    app.router.add_post("/hooks", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}/hooks", received


def test_payment_webhook_is_signed_retried_and_delivered(conn, db_url):
    load_world(conn)
    charge = conn.execute("select api.charge('acme', '+2348020000005', 'gems', 'w1')").fetchone()[0]
    claim(conn, "test_ng")
    settle(conn, charge["id"], "succeeded")
    secret = conn.execute("select webhook_secret from cp.merchant where code = 'acme'").fetchone()[0]

    async def scenario():
        runner, url, received = await _receiver([500])
        # The receiver is local plain http: both must be allowed, explicitly, where the URL is set and
        # by the dispatcher.
        conn.execute("select set_config('carrierpay.webhook_allow_http', 'on', false)")
        conn.execute("update cp.merchant set webhook_url = %s where code = 'acme'", [url])
        local = webhooks.DestinationPolicy(allow_networks=(ip_network("127.0.0.1/32"),), allow_http=True)
        try:
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn, \
                    webhooks.WebhookClient(local) as client:
                assert await webhooks.dispatch_once(aconn, client) == 1  # answered 500
                assert await webhooks.dispatch_once(aconn, client) == 0  # backing off
                conn.execute("select admin.advance_clock(interval '1 minute')")
                assert await webhooks.dispatch_once(aconn, client) == 1  # delivered
        finally:
            await runner.cleanup()
        return received

    received = asyncio.run(scenario())
    assert len(received) == 2
    headers, body = received[-1]
    assert webhooks.verify(secret, body, headers["X-Carrierpay-Signature"])
    assert not webhooks.verify("another-secret", body, headers["X-Carrierpay-Signature"])
    document = json.loads(body)
    assert document["type"] == "payment.succeeded" and document["data"]["id"] == charge["id"]
    state = conn.execute("select status, attempts, last_error from cp.merchant_notification").fetchone()
    assert state == ("delivered", 2, None)


def test_merchant_without_webhook_url_gets_no_notifications(conn):
    load_world(conn)
    charge = conn.execute("select api.charge('other', '+2348020000006', 'coins', 'w2')").fetchone()[0]
    claim(conn, "test_ng")
    settle(conn, charge["id"], "succeeded")
    assert conn.execute("select count(*) from cp.merchant_notification").fetchone()[0] == 0
