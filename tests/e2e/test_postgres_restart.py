"""PostgreSQL restarted while charges are in flight: the daemons reconnect, nothing is lost and
nothing is charged twice; our ledger agrees with each carrier's own to the minor unit."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemons"))
from harness import World, assert_each_payment_settled_once  # noqa: E402

DIALECTS = ["oneapi_gb", "parlayx_za"]
PER_CARRIER = 60


async def test_postgres_restart_under_load_loses_and_doubles_nothing(db_url, pg_cluster):
    # parlayx_za does not deduplicate: its charges cut off by the restart go unknown and are
    # settled by status query; oneapi_gb's are repeated under the same correlator.
    async with World(db_url, carriers=DIALECTS, reconciler=True, timeout_s=2.0,
                     not_deduplicated=("parlayx_za",)) as world:
        for sim in world.sims.values():
            sim.faults.latency_s, sim.faults.latency_jitter_s = 0.05, 0.2  # so calls are in flight
        payments = await world.charge_many(DIALECTS, PER_CARRIER, first=2000, key="restart", poor_every=4)

        await world.until_carriers_hold(20)
        await asyncio.to_thread(pg_cluster.stop)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(pg_cluster.start)
        await world.conn.close()
        world.conn = await psycopg.AsyncConnection.connect(world.url, autocommit=True)

        assert await world.open_charges_after(160) == 0

        statuses = await assert_each_payment_settled_once(world, payments)
        assert statuses.get("succeeded", 0) >= len(DIALECTS) and statuses.get("failed", 0) >= 1
