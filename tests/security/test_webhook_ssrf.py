"""Webhooks cannot be turned against our own network: a merchant's URL is the attacker's input.

A hostile merchant receiver answers with redirects to an internal service; URLs and host names lead
to loopback, private, link-local and other non-public addresses. None of them may receive the
signed body unless the operator allowed that network explicitly.
"""

from __future__ import annotations

import asyncio
import socket
from ipaddress import ip_network

import psycopg
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from carrierpay import webhooks
from carrierpay.supervisor import load_config
from tests.core.world import claim, load_world, settle

LOOPBACK = webhooks.DestinationPolicy(allow_networks=(ip_network("127.0.0.1/32"),), allow_http=True)


class Server:
    """A loopback HTTP server that records every request and answers from a script."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.hits: list[tuple[str, str, bytes]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Server:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.hits.append((request.method, request.path, await request.read()))
            return self.answer(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self._runner.cleanup()


class FakeDns(AbstractResolver):
    """DNS as an attacker who controls a domain answers it: any name, any address."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[dict]:
        return [{"hostname": host, "host": address, "port": port,
                 "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}
                for address in self.answers[host]]

    async def close(self) -> None:
        pass


def _one_notification(conn: psycopg.Connection) -> None:
    """The world, with one succeeded payment whose notification is due for merchant acme."""
    load_world(conn)
    charge = conn.execute("select api.charge('acme', '+2348020000005', 'gems', 'ssrf-1')").fetchone()[0]
    claim(conn, "test_ng")
    settle(conn, charge["id"], "succeeded")


def _set_url(conn: psycopg.Connection, url: str) -> None:
    conn.execute("select set_config('carrierpay.webhook_allow_http', 'on', false)")
    conn.execute("update cp.merchant set webhook_url = %s where code = 'acme'", [url])


def _state(conn: psycopg.Connection) -> tuple:
    return conn.execute("select status, attempts, last_error from cp.merchant_notification").fetchone()


async def _dispatch(db_url: str, policy: webhooks.DestinationPolicy, resolver: AbstractResolver | None = None) -> int:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn, \
            webhooks.WebhookClient(policy, resolver=resolver) as client:
        return await webhooks.dispatch_once(aconn, client, timeout_s=5)


@pytest.fixture
def no_operator_allowances(monkeypatch):
    monkeypatch.delenv("CARRIERPAY_WEBHOOK_ALLOW_NETWORKS", raising=False)
    monkeypatch.delenv("CARRIERPAY_WEBHOOK_ALLOW_HTTP", raising=False)


def test_a_redirect_to_an_internal_service_is_never_followed(conn, db_url):
    _one_notification(conn)
    statuses = [307, 308, 302]

    async def scenario():
        async with Server(lambda request: web.Response(status=200, text="internal admin")) as internal:
            target = f"http://127.0.0.1:{internal.port}/internal-admin"

            def redirect(request):
                return web.Response(status=statuses.pop(0), headers={"Location": target})

            async with Server(redirect) as hostile:
                # Even with the hostile receiver's own address allowed (it sits on loopback here), the
                # redirect must not be followed: the internal service shares that address.
                _set_url(conn, f"http://127.0.0.1:{hostile.port}/hooks")
                errors = []
                for _ in range(3):
                    assert await _dispatch(db_url, LOOPBACK) == 1
                    errors.append(_state(conn))
                    conn.execute("select admin.advance_clock(interval '1 day')")
                return hostile.hits, internal.hits, errors

    hostile_hits, internal_hits, states = asyncio.run(scenario())
    assert internal_hits == []
    assert [method for method, _, _ in hostile_hits] == ["POST", "POST", "POST"]
    # Each redirect is a failed delivery with its reason, retried on the usual back-off.
    assert [(status, attempts) for status, attempts, _ in states] == [("pending", 1), ("pending", 2), ("pending", 3)]
    for (_, _, error), code in zip(states, (307, 308, 302), strict=True):
        assert error.startswith(f"HTTP {code}: redirect to ") and "not followed" in error


def test_loopback_and_private_destinations_are_refused_at_connect_time(conn, db_url, no_operator_allowances):
    _one_notification(conn)
    policy = webhooks.DestinationPolicy.from_settings()  # what `carrierpay webhooks run` uses by default
    assert policy == webhooks.DestinationPolicy()

    async def scenario():
        async with Server(lambda request: web.Response(status=200)) as local:
            dns = FakeDns({
                # names that look public, answered with our own network's addresses
                "hooks.merchant.example": ["127.0.0.1"],
                "rfc1918.merchant.example": ["10.0.0.7"],
                "office.merchant.example": ["192.168.1.20"],
                "metadata.merchant.example": ["169.254.169.254"],
                "cgnat.merchant.example": ["100.64.0.9"],
                "zero.merchant.example": ["0.0.0.0"],
                "multicast.merchant.example": ["224.0.0.251"],
                "ula.merchant.example": ["fd00::1"],
                "v6loop.merchant.example": ["::1"],
                "mapped.merchant.example": ["::ffff:127.0.0.1"],
                "mixed.merchant.example": ["10.1.1.1", "127.0.0.1"],
            })
            # (a notification is given up after 15 attempts: at most 14 destinations here)
            urls = [f"https://127.0.0.1:{local.port}/hooks", f"https://localhost:{local.port}/hooks"]
            urls += [f"https://{name}:{local.port}/hooks" for name in dns.answers]
            errors = {}
            for url in urls:
                _set_url(conn, url)
                assert await _dispatch(db_url, policy, dns if ".example" in url else None) == 1
                errors[url] = _state(conn)[2]
                conn.execute("select admin.advance_clock(interval '1 day')")
            return local.hits, errors

    hits, errors = asyncio.run(scenario())
    assert hits == []  # nothing reached the local server, by any name
    for url, error in errors.items():
        assert error.startswith("refused: "), (url, error)
        assert "not a public address" in error, (url, error)
    assert "loopback" in errors[next(u for u in errors if "//hooks.merchant" in u)]
    assert "link-local" in errors[next(u for u in errors if "metadata" in u)]
    assert "multicast" in errors[next(u for u in errors if "multicast" in u)]
    assert "unspecified" in errors[next(u for u in errors if "zero" in u)]
    assert _state(conn)[:2] == ("pending", len(errors))


def test_the_address_policy_covers_every_non_public_range(no_operator_allowances):
    policy = webhooks.DestinationPolicy()
    refused = ["127.0.0.1", "127.255.0.1", "10.0.0.1", "172.31.255.255", "192.168.0.1", "169.254.169.254",
               "100.64.0.1", "0.0.0.0", "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1",
               "::", "::1", "fc00::1", "fdff::1", "fe80::1", "fe80::1%eth0", "ff02::1", "fec0::1",
               "::ffff:10.0.0.1", "::ffff:127.0.0.1", "2002:7f00:1::", "64:ff9b::a00:1"]
    for address in refused:
        assert policy.address_refusal(address) is not None, address
    for address in ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2001:4860:4860::8888", "::ffff:8.8.8.8"]:
        assert policy.address_refusal(address) is None, address
    assert policy.url_refusal("http://merchant.example/hooks") is not None
    assert policy.url_refusal("ftp://merchant.example/hooks") is not None
    assert policy.url_refusal("https://merchant.example/hooks") is None
    with pytest.raises(OSError):
        policy.socket((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80)))


def test_the_operator_allow_list_lets_exactly_its_networks_through(conn, db_url, monkeypatch):
    _one_notification(conn)
    secret = conn.execute("select webhook_secret from cp.merchant where code = 'acme'").fetchone()[0]
    monkeypatch.setenv("CARRIERPAY_WEBHOOK_ALLOW_NETWORKS", "127.0.0.1/32, 192.0.2.0/24")
    monkeypatch.setenv("CARRIERPAY_WEBHOOK_ALLOW_HTTP", "1")
    policy = webhooks.DestinationPolicy.from_settings()
    assert policy.allow_http and policy.allow_networks == (ip_network("127.0.0.1/32"), ip_network("192.0.2.0/24"))

    async def scenario():
        async with Server(lambda request: web.Response(status=200)) as local:
            dns = FakeDns({"private.merchant.example": ["10.0.0.7"]})
            # A network not on the list is still refused.
            _set_url(conn, f"http://private.merchant.example:{local.port}/hooks")
            assert await _dispatch(db_url, policy, dns) == 1
            refused = _state(conn)
            conn.execute("select admin.advance_clock(interval '1 day')")
            # The daemon itself, configured from the environment only, delivers to the allowed one.
            _set_url(conn, f"http://127.0.0.1:{local.port}/hooks")
            stop = asyncio.Event()
            task = asyncio.ensure_future(webhooks.run(db_url, interval=0.05, stop=stop))
            for _ in range(200):
                if local.hits:
                    break
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.wait_for(task, 10)
            return refused, local.hits

    refused, hits = asyncio.run(scenario())
    assert refused[2].startswith("refused: ") and "10.0.0.7" in refused[2]
    assert len(hits) == 1
    method, path, body = hits[0]
    assert (method, path) == ("POST", "/hooks")
    assert _state(conn) == ("delivered", 2, None)
    assert secret  # the body was signed with it (checked in tests/core/test_webhooks.py)


def test_carrierpay_yaml_passes_the_allow_list_to_the_dispatcher(tmp_path):
    path = tmp_path / "carrierpay.yaml"
    path.write_text("daemons:\n  webhooks: {allow_networks: [127.0.0.1/32, 'fd00::/8'], allow_http: true}\n")
    webhook = next(c for c in load_config(path, environ={}).children if c.name == "webhooks-1")
    assert webhook.args == ["webhooks", "run", "--allow-network", "127.0.0.1/32", "--allow-network", "fd00::/8",
                            "--allow-http"]
    path.write_text("daemons:\n  webhooks: {interval_s: 1}\n")
    webhook = next(c for c in load_config(path, environ={}).children if c.name == "webhooks-1")
    assert "--allow-network" not in webhook.args and "--allow-http" not in webhook.args


def test_a_bad_allow_list_entry_is_refused(monkeypatch):
    monkeypatch.setenv("CARRIERPAY_WEBHOOK_ALLOW_NETWORKS", "127.0.0.1/32,not-a-network")
    with pytest.raises(ValueError, match="not an IP network"):
        webhooks.DestinationPolicy.from_settings()


def test_webhook_urls_are_checked_wherever_they_are_set(conn, no_operator_allowances):
    def refused(sql: str, *args) -> str:
        with pytest.raises(psycopg.Error) as failure:
            conn.execute(sql, args)
        return failure.value.sqlstate

    for url in ["ftp://shop.example/h", "javascript:alert(1)", "shop.example/h", "https://", "https:///h",
                "https://user:pw@shop.example/h", "https://shop.example@127.0.0.1/h", "https://shop .example/h",
                "https://shop.example/h\n", "https://" + "a" * 2048]:
        assert refused("select admin.add_merchant('ssrf_shop', 'Shop', %s)", url) == "CP063", url
    assert refused("select admin.add_merchant('ssrf_shop', 'Shop', 'http://shop.example/h')") == "CP064"
    assert conn.execute("select count(*) from cp.merchant").fetchone()[0] == 0  # nothing half-written
    assert conn.execute("select count(*) from pg_roles where rolname = 'cp_merchant_ssrf_shop'").fetchone()[0] == 0
    conn.execute("select admin.add_merchant('ssrf_shop', 'Shop', 'https://shop.example/h')")
    # The owner writing the table directly is checked the same way.
    assert refused("update cp.merchant set webhook_url = 'http://10.0.0.1/h' where code = 'ssrf_shop'") == "CP064"
    assert refused("update cp.merchant set webhook_url = 'gopher://shop.example/' where code = 'ssrf_shop'") == "CP063"
    # Plain http only where the operator allows it for the session (or the database).
    conn.execute("select set_config('carrierpay.webhook_allow_http', 'on', false)")
    conn.execute("update cp.merchant set webhook_url = 'http://shop.example/h' where code = 'ssrf_shop'")
    assert conn.execute("select webhook_url from cp.merchant").fetchone()[0] == "http://shop.example/h"


def test_an_http_url_stored_earlier_is_not_posted_to_unless_the_dispatcher_allows_http(conn, db_url,
                                                                                      no_operator_allowances):
    _one_notification(conn)

    async def scenario():
        async with Server(lambda request: web.Response(status=200)) as local:
            _set_url(conn, f"http://127.0.0.1:{local.port}/hooks")
            https_only = webhooks.DestinationPolicy(allow_networks=(ip_network("127.0.0.1/32"),))
            assert await _dispatch(db_url, https_only) == 1
            return local.hits

    assert asyncio.run(scenario()) == []
    status, attempts, error = _state(conn)
    assert (status, attempts) == ("pending", 1) and error.startswith("refused: plain http")
