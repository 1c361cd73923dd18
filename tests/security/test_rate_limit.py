"""A client flooding the merchant HTTP API: over its request limit it is answered 429 with Retry-After
and nothing is written, while other clients go on being served; guessing secrets at the token endpoint
is held to the same limit; and a merchant cannot raise its own limit."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import psycopg
import pytest
from psycopg import errors

from carrierpay.http_api.server import ApiServer
from tests.http_api.kit import Api, add_client, basic, conforms, gateway_url, payment_body

PAYMENTS = "/carrier-billing/v0.5/payments"


class FrozenClock:
    """The limiter's clock, standing still unless moved: no bucket refills while the flood runs."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_flooding_client_is_refused_with_429_and_nothing_written(world_url, owner):
    flooder = add_client(world_url, "acme")
    owner.execute("select admin.set_api_client_rate_limit(%s, 3)", [flooder["client_id"]])
    neighbour = add_client(world_url, "acme")
    clock = FrozenClock()
    async with ApiServer(gateway_url(world_url)) as server, aiohttp.ClientSession() as session:
        server.limiter.clock = clock
        api, other = Api(session, server.base_url), Api(session, server.base_url)
        await api.get_token(flooder)
        await other.get_token(neighbour)
        answers = await asyncio.gather(*(api.call("POST", PAYMENTS, payment_body(reference=f"flood-{i}"))
                                         for i in range(20)))
        statuses = [status for status, _, _ in answers]
        assert statuses.count(201) == 3 and statuses.count(429) == 17, statuses
        for status, headers, answer in answers:
            if status == 429:
                assert answer == {"status": 429, "code": "TOO_MANY_REQUESTS", "message": "Rate limit reached."}
                conforms("ErrorInfo", answer)
                assert int(headers["Retry-After"]) >= 1
        # Reads count too: the limit is on requests, not on payments.
        status, headers, _ = await api.call("GET", PAYMENTS)
        assert status == 429 and int(headers["Retry-After"]) >= 1
        # Another client (of the same merchant) is not held back by the flood.
        status, _, _ = await other.call("POST", PAYMENTS, payment_body(reference="neighbour-1"))
        assert status == 201
        # A second later the bucket holds three requests again.
        clock.now += 1.0
        refilled = await asyncio.gather(*(api.call("POST", PAYMENTS, payment_body(reference=f"later-{i}"))
                                          for i in range(5)))
        assert sorted(s for s, _, _ in refilled) == [201, 201, 201, 429, 429]
    # Nothing of a refused request was written: the payments are exactly the ones answered 201.
    assert owner.execute("select count(*) from cp.procedure").fetchone()[0] == 3 + 1 + 3


async def test_guessing_secrets_at_the_token_endpoint_is_held_to_the_limit(world_url):
    client = add_client(world_url, "acme")
    async with ApiServer(gateway_url(world_url), rate_limit=4) as server, aiohttp.ClientSession() as session:
        server.limiter.clock = FrozenClock()
        url = f"{server.base_url}/oauth2/token"

        async def guess(secret: str) -> tuple[int, dict, dict]:
            async with session.post(url, data={"grant_type": "client_credentials"},
                                    headers=basic(client["client_id"], secret)) as r:
                return r.status, dict(r.headers), await r.json()

        answers = await asyncio.gather(*(guess(f"cps_guess{i}") for i in range(12)))
        statuses = sorted(s for s, _, _ in answers)
        assert statuses == [401] * 4 + [429] * 8, statuses
        assert all(int(h["Retry-After"]) >= 1 for s, h, _ in answers if s == 429)
        # Now even the right secret waits: the guesser spent the client's requests.
        status, _, answer = await guess(client["client_secret"])
        assert status == 429 and answer["error"] == "temporarily_unavailable"


async def test_fresh_tokens_do_not_escape_the_limit(world_url, owner):
    client = add_client(world_url, "acme")
    owner.execute("select admin.set_api_client_rate_limit(%s, 2)", [client["client_id"]])
    async with ApiServer(gateway_url(world_url), rate_limit=1000) as server, aiohttp.ClientSession() as session:
        server.limiter.clock = FrozenClock()
        api = Api(session, server.base_url)
        await api.get_token(client)
        status, _, _ = await api.call("GET", PAYMENTS)
        assert status == 200
        # The token endpoint now knows the client's own limit (2): one request left, for one token.
        await api.get_token(client)
        status, _, answer = await api.call("GET", PAYMENTS)
        assert status == 429, answer
        async with session.post(f"{server.base_url}/oauth2/token", data={"grant_type": "client_credentials"},
                                headers=basic(client["client_id"], client["client_secret"])) as r:
            assert r.status == 429


def test_a_merchant_cannot_set_its_own_limit(world_url, owner, attacker):
    client = add_client(world_url, attacker.code)
    with attacker.connect() as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("select admin.set_api_client_rate_limit(%s, 100000)", [client["client_id"]])
    with psycopg.connect(gateway_url(world_url), autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("select admin.set_api_client_rate_limit(%s, 100000)", [client["client_id"]])
    assert owner.execute("select requests_per_second from cp.api_client where client_id = %s",
                         [client["client_id"]]).fetchone()[0] is None


def test_limits_are_checked(world_url, owner):
    from tests.security.conftest import raises_sqlstate

    client = add_client(world_url, "acme")
    for bad in (0, -5, 100001):
        with raises_sqlstate("CP127"):
            owner.execute("select admin.set_api_client_rate_limit(%s, %s)", [client["client_id"], bad])
    with raises_sqlstate("CP116"):
        owner.execute("select admin.set_api_client_rate_limit(%s, 10)", [f"cpc_{uuid.uuid4().hex[:18]}"])
    answer = owner.execute("select admin.set_api_client_rate_limit(%s, 10)", [client["client_id"]]).fetchone()[0]
    assert answer == {"client_id": client["client_id"], "requests_per_second": 10}
    answer = owner.execute("select admin.set_api_client_rate_limit(%s, null)", [client["client_id"]]).fetchone()[0]
    assert answer["requests_per_second"] is None
