"""Attacks on the front of a sharded deployment, as a merchant logged in to it with its own role: the
front's shard login acts for every merchant on the shards, so the front is where a merchant is held
to itself, and nothing on the front may hand out that login or the cluster map."""

from __future__ import annotations

import psycopg
import pytest

from carrierpay.migrate import PARTITION_ID_BITS
from tests.shards.conftest import (
    login_url,
    merchant,
    msisdn_on,
    sharded,  # noqa: F401  (the fixture: a front and two shards)
)


@pytest.fixture(scope="module")
def victim(sharded):  # noqa: F811
    document = merchant(sharded, "victim")
    with psycopg.connect(login_url(sharded, document), autocommit=True) as conn:
        payment = conn.execute("select api.charge('victim', %s, 'gems', 'victim-1')",
                               [msisdn_on(sharded, 1, 700)]).fetchone()[0]
    return payment


@pytest.fixture(scope="module")
def attacker_url(sharded):  # noqa: F811
    return login_url(sharded, merchant(sharded, "attacker"))


@pytest.fixture
def attacker(attacker_url):
    with psycopg.connect(attacker_url, autocommit=True) as conn:
        yield conn


def test_a_merchant_cannot_act_for_another_through_the_front(sharded, victim, attacker):  # noqa: F811
    for query, params in [
        ("select api.charge('victim', %s, 'gems', 'steal')", [msisdn_on(sharded, 0, 720)]),
        ("select api.payment('victim', %s)", [victim["id"]]),
        ("select api.refund('victim', %s, 'steal-refund')", [victim["id"]]),
    ]:
        with pytest.raises(psycopg.Error) as refused:
            attacker.execute(query, params)
        assert refused.value.sqlstate == "CP002", query
    for url in sharded.shard_urls:
        with psycopg.connect(url) as shard:
            assert shard.execute("select count(*) from cp.idempotency where idem_key like 'steal%'").fetchone()[0] == 0


def test_a_merchant_cannot_list_anothers_payments_or_subscriptions_through_the_front(victim, attacker):
    for query in ["select api.list_payments('victim')", "select api.list_subscriptions('victim')"]:
        with pytest.raises(psycopg.Error) as refused:
            attacker.execute(query)
        assert refused.value.sqlstate == "CP002", query
    # Its own lists, merged over every partition, hold only its own rows (the victim's charge is on partition 1).
    own = attacker.execute("select api.list_payments('attacker', p_per_page => 100)").fetchone()[0]
    assert str(victim["id"]) not in [item["paymentId"] for item in own["payments"]]
    assert own["total"] == len(own["payments"])
    with pytest.raises(psycopg.Error) as private:
        attacker.execute("select * from front.shard_list_payments('victim', null, null, null, 'desc', 1, 100, null)")
    assert private.value.sqlstate == "42501"


def test_a_merchants_own_id_of_another_merchant_is_not_found(sharded, victim, attacker):  # noqa: F811
    with pytest.raises(psycopg.Error) as hidden:
        attacker.execute("select api.payment('attacker', %s)", [victim["id"]])
    assert hidden.value.sqlstate == "CP040"
    with pytest.raises(psycopg.Error) as nowhere:
        attacker.execute("select api.payment('attacker', %s)", [1 << 62])
    assert nowhere.value.sqlstate == "CP160"
    assert victim["id"] >> PARTITION_ID_BITS == 1


def test_the_shard_login_and_the_map_stay_with_the_front_owner(attacker):
    assert attacker.execute("select umoptions from pg_catalog.pg_user_mappings").fetchall() == [(None,)]
    for query in ["select * from front.list_partitions()",
                  "select front.set_cluster(array['host=127.0.0.1 dbname=evil'])",
                  "select front.set_shard_login('postgres', 'x')",
                  "select front.register_merchant('evil', 'x')",
                  "select * from front.shard_configuration()",
                  "select * from front.admin_change",
                  "select * from front.merchant",
                  # the PL/Proxy function behind a twin, and a routing function
                  "select front.proxy_payment('victim', 1)",
                  "select front.route_id('attacker', 1)"]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            attacker.execute(query)


def test_a_merchant_cannot_write_its_own_proxy_function(attacker):
    for query in ["create function public.mine() returns text language plproxy as "
                  "$$ cluster 'carrierpay_shards'; run on 0; select current_user::text; $$",
                  "create function api.mine() returns int language sql as 'select 1'"]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            attacker.execute(query)
