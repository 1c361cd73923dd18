"""A partition that is down: calls for its subscribers fail at once, nothing is written elsewhere, the
other partition carries on, and the partition takes calls again when it returns."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.shards.conftest import login_url, merchant, msisdn_on


def test_calls_for_a_stopped_partition_fail_fast_and_the_others_carry_on(sharded):
    document = merchant(sharded, "outage_shop")
    down_number, up_number = msisdn_on(sharded, 1, 900), msisdn_on(sharded, 0, 900)
    port = psycopg.conninfo.conninfo_to_dict(sharded.shard_urls[1])["port"]
    partition_1 = next(cluster for cluster in sharded.clusters if str(cluster.port) == str(port))
    partition_1.stop()
    try:
        with psycopg.connect(login_url(sharded, document), autocommit=True) as api:
            started = time.monotonic()
            with pytest.raises(psycopg.Error) as down:
                api.execute("select api.charge('outage_shop', %s, 'gems', 'down-1')", [down_number])
            assert time.monotonic() - started < 10
            assert down.value.sqlstate == "CP162"
            assert "cannot be reached" in str(down.value) and "127.0.0.1" not in str(down.value)
            fine = api.execute("select api.charge('outage_shop', %s, 'gems', 'up-1')", [up_number]).fetchone()[0]
            assert fine["status"] == "pending"
        with psycopg.connect(sharded.shard_urls[0]) as conn:
            assert conn.execute("select count(*) from cp.subscriber where msisdn = %s",
                                [down_number]).fetchone()[0] == 0
            assert conn.execute("select count(*) from cp.idempotency where idem_key = 'down-1'").fetchone()[0] == 0
    finally:
        partition_1.start()
    with psycopg.connect(login_url(sharded, document), autocommit=True) as api:
        back = api.execute("select api.charge('outage_shop', %s, 'gems', 'down-1')", [down_number]).fetchone()[0]
        assert back["status"] == "pending"
