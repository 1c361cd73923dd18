"""The SQL-API tests marked `sql_api` run twice; this one checks the second run is what it claims: the
calls go through the front's PL/Proxy twins to the partition that owns each number, and a refusal
keeps its code (tests/front_kit.py)."""

from __future__ import annotations

import psycopg
import pytest

from carrierpay.migrate import PARTITION_ID_BITS
from tests.core.world import load_world

pytestmark = pytest.mark.sql_api

NUMBERS = [f"+2348020000{i:03d}" for i in range(200, 216)]


def test_the_api_calls_go_where_the_run_says(conn, api_target):
    load_world(conn)
    partitions = {conn.execute("select api.charge('acme', %s, 'gems', %s)", [number, f"where-{number}"])
                  .fetchone()[0]["id"] >> PARTITION_ID_BITS for number in NUMBERS}
    with pytest.raises(psycopg.Error) as refused:
        conn.execute("select api.charge('acme', %s, 'no_such_product', 'where-refused')", [NUMBERS[0]])
    assert refused.value.sqlstate == "CP003"
    if api_target == "front":
        assert partitions == {0, 1}  # sixteen numbers: both partitions own some
        assert "REMOTE ERROR" in str(refused.value)  # answered by a partition, through PL/Proxy
    else:
        assert partitions == {0}
        assert "REMOTE ERROR" not in str(refused.value)
