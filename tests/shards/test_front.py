"""The front routes the SQL API to the shard that owns the subscriber or the id."""

from __future__ import annotations

import psycopg

from tests.shards.conftest import login_url, merchant, msisdn_on


def test_smoke(sharded):
    document = merchant(sharded, "smoke")
    with psycopg.connect(login_url(sharded, document), autocommit=True) as conn:
        number = msisdn_on(sharded, 1)
        charge = conn.execute("select api.charge('smoke', %s, 'gems', 'k1')", [number]).fetchone()[0]
        print(charge)
        print(conn.execute("select api.payment('smoke', %s)", [charge["id"]]).fetchone()[0])
