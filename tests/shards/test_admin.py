"""Configuration through the front: on every shard in one two-phase commit or nowhere, drift found,
a stopped coordinator's changes finished, and a carrier's budget shared between the shards."""

from __future__ import annotations

import psycopg
import pytest

from carrierpay.shards import fanout
from tests.shards.conftest import merchant


def rows(url: str, query: str, *params) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params or None).fetchall()


def test_a_merchant_is_created_on_every_shard_with_one_secret_and_a_front_login(sharded):
    document = merchant(sharded, "everywhere")
    secrets = [rows(url, "select webhook_secret, platform_fee_bp from cp.merchant where code = 'everywhere'")
               for url in sharded.shard_urls]
    assert secrets[0] == secrets[1] == [(document["webhook_secret"], 0)]
    assert rows(sharded.front_url, "select db_role from front.merchant where code = 'everywhere'") == [
        ("cp_merchant_everywhere",)]
    assert fanout.check(sharded.front_url).clean


def test_a_change_refused_by_one_shard_is_applied_nowhere(sharded):
    # A role of that name that carrierpay did not make exists on shard 1's server only: shard 1
    # refuses (CP085) after shard 0 has already created the merchant in its transaction.
    with psycopg.connect(sharded.clusters[2].url("postgres"), autocommit=True) as conn:
        conn.execute("create role cp_merchant_halfway")
    with pytest.raises(psycopg.Error) as refused:
        sharded.admin("add_merchant", p_code="halfway", p_name="Halfway")
    assert refused.value.sqlstate == "CP085"
    for url in sharded.shard_urls:
        assert rows(url, "select count(*) from cp.merchant where code = 'halfway'") == [(0,)]
        assert rows(url, "select count(*) from pg_catalog.pg_prepared_xacts") == [(0,)]
    assert rows(sharded.shard_urls[0], "select count(*) from pg_catalog.pg_roles "
                                       "where rolname = 'cp_merchant_halfway'") == [(0,)]
    assert rows(sharded.front_url, "select count(*) from front.merchant where code = 'halfway'") == [(0,)]
    assert rows(sharded.front_url, "select count(*) from pg_catalog.pg_roles "
                                   "where rolname = 'cp_merchant_halfway'") == [(0,)]


def test_drift_is_found_and_a_repeated_change_repairs_it(sharded):
    merchant(sharded, "drifting")
    # Someone changed one shard directly, not through the front.
    with psycopg.connect(sharded.shard_urls[1]) as conn:
        conn.execute("select admin.add_product('drifting', 'extra', 'Extra')")
        conn.execute("select admin.add_product('drifting', 'gems', 'Renamed gems')")
    drift = fanout.check(sharded.front_url)
    assert ("product", "drifting/extra", ["0"], 1) in drift.configuration
    assert ("product", "drifting/gems", None, 2) in drift.configuration
    sharded.admin("add_product", p_merchant="drifting", p_code="extra", p_name="Extra")
    sharded.admin("add_product", p_merchant="drifting", p_code="gems", p_name="Gems")
    assert fanout.check(sharded.front_url).clean


def test_a_change_decided_before_the_coordinator_stopped_is_committed_by_recover(sharded):
    merchant(sharded, "decided")
    change = fanout.prepare(sharded.front_url, "add_product",
                            {"p_merchant": "decided", "p_code": "late", "p_name": "Late"})
    change.front.tpc_commit()  # the decision is durable; the coordinator stops before telling the shards
    for conn in change.shards:
        conn.close()
    change.front.close()
    in_doubt = fanout.check(sharded.front_url).in_doubt
    assert sorted(partition for partition, gid in in_doubt if gid == change.gid) == [0, 1]
    for url in sharded.shard_urls:
        assert rows(url, "select count(*) from cp.product where code = 'late'") == [(0,)]
    done = fanout.recover(sharded.front_url)
    assert sorted((partition, outcome) for partition, gid, outcome in done if gid == change.gid) == [
        (0, "committed"), (1, "committed")]
    for url in sharded.shard_urls:
        assert rows(url, "select count(*) from cp.product where code = 'late'") == [(1,)]
    assert fanout.check(sharded.front_url).clean


def test_a_change_not_decided_is_rolled_back_by_recover(sharded):
    merchant(sharded, "undecided")
    change = fanout.prepare(sharded.front_url, "add_product",
                            {"p_merchant": "undecided", "p_code": "never", "p_name": "Never"})
    for conn in [*change.shards, change.front]:
        conn.close()  # everyone prepared, nothing decided
    in_doubt = fanout.check(sharded.front_url).in_doubt
    assert sorted(partition for partition, gid in in_doubt if gid == change.gid) == [-1, 0, 1]
    done = fanout.recover(sharded.front_url)
    assert sorted((partition, outcome) for partition, gid, outcome in done if gid == change.gid) == [
        (-1, "rolled back"), (0, "rolled back"), (1, "rolled back")]
    for url in sharded.shard_urls:
        assert rows(url, "select count(*) from cp.product where code = 'never'") == [(0,)]
    assert rows(sharded.front_url, "select count(*) from front.admin_change where gid = %s", change.gid) == [(0,)]
    assert fanout.check(sharded.front_url).clean


def test_a_carriers_budget_is_shared_between_the_shards(sharded):
    shares = [rows(url, "select tps from cp.carrier where code = 'shard_gb'")[0][0] for url in sharded.shard_urls]
    assert shares == [11, 10]  # the conftest's carrier has 21 calls per second
    assert [fanout.tps_share(5, k, 4) for k in range(4)] == [2, 1, 1, 1]
    assert fanout.check(sharded.front_url).clean


def test_a_call_of_one_shard_is_not_fanned_out(sharded):
    with pytest.raises(fanout.ShardError):
        sharded.admin("settle_call", p_call_id=1, p_outcome="failed", p_reason="x")
