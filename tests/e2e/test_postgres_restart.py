"""PostgreSQL restarted while charges are in flight: the daemons reconnect, nothing is lost and
nothing is charged twice; our ledger agrees with each carrier's own to the minor unit."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemons"))
from harness import CARRIERS, World, assert_each_payment_settled_once, msisdn  # noqa: E402

DIALECTS = ["oneapi_gb", "parlayx_za"]
PER_CARRIER = 60


async def test_postgres_restart_under_load_loses_and_doubles_nothing(db_url, pg_cluster):
    # parlayx_za does not deduplicate: its charges cut off by the restart go unknown and are
    # settled by status query; oneapi_gb's are repeated under the same correlator.
    async with World(db_url, carriers=DIALECTS, reconciler=True, timeout_s=2.0,
                     not_deduplicated=("parlayx_za",)) as world:
        for sim in world.sims.values():
            sim.faults.latency_s, sim.faults.latency_jitter_s = 0.05, 0.2  # so calls are in flight
        payments: dict[int, str] = {}
        for code in DIALECTS:
            amount = CARRIERS[code][2]
            for n in range(PER_CARRIER):
                number = msisdn(code, 2000 + n)
                world.sims[code].add_subscriber(number, amount - 1 if n % 4 == 0 else amount * 3)
                payments[await world.charge(number, f"restart-{code}-{n}")] = code

        deadline = asyncio.get_running_loop().time() + 60
        while sum(len(sim.ledger.transactions) for sim in world.sims.values()) < 20:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        await asyncio.to_thread(pg_cluster.stop)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(pg_cluster.start)
        await world.conn.close()
        world.conn = await psycopg.AsyncConnection.connect(world.url, autocommit=True)

        for _ in range(160):
            open_ = await world.one("select count(*) from cp.procedure where kind = 'charge' "
                                    "and status not in ('succeeded', 'failed')")
            if open_ == 0:
                break
            await asyncio.sleep(0.5)
            await world.advance(timedelta(minutes=6))  # leases run out, reconciliation back-off is due
        assert open_ == 0

        statuses = await assert_each_payment_settled_once(world, payments)
        assert statuses.get("succeeded", 0) >= len(DIALECTS) and statuses.get("failed", 0) >= 1
