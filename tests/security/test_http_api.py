"""The merchant HTTP API attacked: another merchant's token, the gateway's own login, a merchant's database
role reaching for the token machinery, and what is kept of secrets and tokens."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import errors

from tests.http_api.kit import add_client, api_server, gateway_url, payment_body
from tests.security.conftest import raises_sqlstate

PAYMENTS = "/carrier-billing/v0.5/payments"


async def test_another_merchants_token_sees_no_payment_of_ours(world_url, owner, attacker):
    async with api_server(world_url) as acme:
        await acme.get_token(add_client(world_url, "acme"))
        status, _, created = await acme.call("POST", PAYMENTS, payment_body(reference="acme-1"))
        assert status == 201
        async with api_server(world_url) as other:
            await other.get_token(add_client(world_url, attacker.code))
            status, _, answer = await other.call("GET", f"{PAYMENTS}/{created['paymentId']}")
            assert (status, answer["code"]) == (404, "NOT_FOUND")
            status, headers, listed = await other.call("GET", PAYMENTS)
            assert status == 200 and listed == [] and headers["X-Total-Count"] == "0"
            # The same referenceCode is the attacker's own business: it creates the attacker's payment, and
            # tells nothing about acme's (no 409).
            status, _, own = await other.call("POST", PAYMENTS, payment_body(reference="acme-1"))
            assert status == 201
    rows = owner.execute("select m.code, count(*) from cp.procedure p join cp.merchant m using (merchant_id) "
                         "group by m.code order by 1").fetchall()
    assert dict(rows) == {"acme": 1, attacker.code: 1}


def test_the_gateway_login_acts_for_nobody_without_set_role(world_url, owner):
    add_client(world_url, "acme")  # makes the gateway a member of acme's role
    with psycopg.connect(gateway_url(world_url), autocommit=True) as conn:
        # NOINHERIT: membership of acme's role gives the login nothing, not even the api schema.
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("select api.charge('acme', '+2348020000007', 'gems', 'gw-1')")
        for table in ("cp.api_client", "cp.api_token", "cp.procedure"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(f"select * from {table}")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("select admin.add_api_client('acme')")
        with raises_sqlstate("CP111"):
            conn.execute("select * from gateway.authenticate('cpt_guess', null)")
        # Merchant roles it was not given are out of reach even by SET ROLE.
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("set role cp_merchant_other")
    assert owner.execute("select count(*) from cp.procedure").fetchone()[0] == 0


def test_a_merchant_role_cannot_reach_the_token_machinery(attacker):
    with attacker.connect() as conn:
        for sql in ("select gateway.issue_token('cpc_x', 'cps_x')",
                    "select * from gateway.authenticate('cpt_x', null)",
                    "select admin.add_api_client('acme')",
                    "select admin.revoke_api_client('cpc_x')",
                    "select * from admin.list_api_clients()"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(sql)


async def test_secrets_and_tokens_are_kept_only_as_digests(world_url, owner):
    client = add_client(world_url, "acme")
    async with api_server(world_url) as api:
        token = (await api.get_token(client))["access_token"]
    stored = owner.execute("select (select string_agg(c::text, ' ') from cp.api_client c) || "
                           "(select string_agg(t::text, ' ') from cp.api_token t)").fetchone()[0]
    for secret in (client["client_secret"], token, client["client_secret"][4:], token[4:]):
        assert secret not in stored
    assert client["client_id"] in stored


async def test_tokens_cannot_be_guessed_or_smuggled(world_url):
    add_client(world_url, "acme")
    async with api_server(world_url) as api:
        for token in ("' or 1=1 --", "x" * 600, "cpt_" + uuid.uuid4().hex, "cpt_\u00e9\u00e9"):
            status, _, answer = await api.call("GET", PAYMENTS, token=token)
            assert status in (400, 401), (token[:20], answer)
            assert answer["code"] in ("UNAUTHENTICATED", "INVALID_ARGUMENT")
        for header in ("Basic abc", "Bearer", "bearer  "):
            status, _, answer = await api.call("GET", PAYMENTS, token="", headers={"Authorization": header})
            assert (status, answer["code"]) == (401, "UNAUTHENTICATED")


async def test_a_sink_cannot_aim_the_dispatcher_at_our_network(world_url, owner):
    from carrierpay import webhooks
    from tests.http_api.kit import settle

    async with api_server(world_url) as api:
        await api.get_token(add_client(world_url, "acme"))
        for number, sink in (("+2348020000011", "https://127.0.0.1:5432/x"),
                             ("+2348020000012", "https://169.254.169.254/latest/meta-data"),
                             ("+2348020000013", "https://10.0.0.1/x")):
            status, _, created = await api.call("POST", PAYMENTS, payment_body(phone=number, sink=f'"{sink}"'))
            assert status == 201, created
            settle(world_url, created["paymentId"])
    async with await psycopg.AsyncConnection.connect(world_url, autocommit=True) as conn, \
            webhooks.WebhookClient(webhooks.DestinationPolicy()) as client:
        await webhooks.dispatch_once(conn, client)
    errors_seen = [row[0] for row in owner.execute(
        "select last_error from cp.merchant_notification where to_sink order by notification_id")]
    assert len(errors_seen) == 3 and all(e.startswith("refused") for e in errors_seen), errors_seen
