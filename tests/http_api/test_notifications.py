"""Notifications to a request's sink: CloudEvents posted over HTTPS by the webhook dispatcher (the same
machinery as merchant webhooks: at least once, retried with back-off), with the request's bearer token."""

from __future__ import annotations

import json
from ipaddress import ip_network

import psycopg
from aiohttp import web

from carrierpay import webhooks
from tests.http_api.kit import add_client, api_server, conforms, payment_body, settle

PAYMENTS = "/carrier-billing/v0.5/payments"


class Sink:
    """A merchant's HTTPS receiver: records what it is sent; answers 500 until told otherwise."""

    def __init__(self, tls_files):
        self.tls_files = tls_files
        self.received: list[tuple[dict, dict]] = []
        self.status = 500

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), json.loads(await request.read())))
        return web.Response(status=self.status)

    async def __aenter__(self) -> Sink:
        app = web.Application()
        app.router.add_post("/sink", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.tls_files.server_context())
        await site.start()
        self.url = f"https://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/sink"
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.runner.cleanup()


def _dispatcher(tls_files) -> webhooks.WebhookClient:
    local = webhooks.DestinationPolicy(allow_networks=(ip_network("127.0.0.1/32"),))
    return webhooks.WebhookClient(local, ssl_context=tls_files.client_context())


async def test_payment_outcome_reaches_the_sink_as_a_cloud_event(world_url, tls_files):
    async with Sink(tls_files) as sink, api_server(world_url) as api:
        await api.get_token(add_client(world_url))
        credential = json.dumps({"credentialType": "ACCESSTOKEN", "accessToken": "sink-token-1",
                                 "accessTokenExpiresUtc": "2099-01-01T00:00:00Z", "accessTokenType": "bearer"})
        status, _, created = await api.call("POST", PAYMENTS, payment_body(sink=json.dumps(sink.url),
                                                                           sinkCredential=credential))
        assert status == 201, created
        assert created["sink"] == sink.url
        settle(world_url, created["paymentId"])
        async with await psycopg.AsyncConnection.connect(world_url, autocommit=True) as conn, \
                _dispatcher(tls_files) as client:
            await webhooks.dispatch_once(conn, client)                 # the sink answers 500: kept, retried
            assert len(sink.received) == 1
            await conn.execute("select admin.advance_clock(interval '1 minute')")
            sink.status = 204
            await webhooks.dispatch_once(conn, client)
            await webhooks.dispatch_once(conn, client)                 # delivered: nothing more to send
            cur = await conn.execute("select status, attempts from cp.merchant_notification where to_sink")
            assert await cur.fetchall() == [("delivered", 2)]
    assert len(sink.received) == 2
    headers, event = sink.received[-1]
    assert headers["Authorization"] == "Bearer sink-token-1"
    assert headers["Content-Type"] == "application/cloudevents+json"
    assert event["type"] == "org.camaraproject.carrier-billing.v0.payment-completed"
    assert event["data"]["paymentId"] == created["paymentId"] and event["data"]["status"] == "succeeded"
    conforms("EventPaymentCompleted", event)
    assert sink.received[0][1]["id"] == event["id"]                  # the same event, delivered again


async def test_a_sink_must_be_a_public_https_url(world_url):
    """create_payment_400.06: a sink the dispatcher may not post to is refused before anything is written."""
    async with api_server(world_url) as api:
        await api.get_token(add_client(world_url))
        for sink in ('"https://user:pw@sink.example/x"', '"https://"'):
            status, _, answer = await api.call("POST", PAYMENTS, payment_body(sink=sink))
            assert (status, answer["code"]) == (400, "INVALID_SINK"), (sink, answer)
    with psycopg.connect(world_url) as conn:
        assert conn.execute("select count(*) from cp.procedure").fetchone()[0] == 0
