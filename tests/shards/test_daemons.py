"""Daemons per shard: each shard's own adapter claims and settles the calls of its subscribers, and
the money checks hold per shard and, through the front's merged reports, in total."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import psycopg

from carrierpay.adapters.daemon import AdapterDaemon
from carrierpay.adapters.registry import connector_factory
from carrierpay.migrate import PARTITION_ID_BITS
from carrierpay.simulators import SimClock
from carrierpay.simulators.fleet import SECRETS, make_simulators
from tests.shards.conftest import login_url, msisdn_on, simulated_merchant

CARRIER = "oneapi_gb"


def receivable(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("select coalesce(sum(balance_minor), 0)::bigint from report.ledger_balances "
                            "where kind::text = 'carrier_receivable' and owner = %s", [CARRIER]).fetchone()[0]


def statuses(url: str, ids: list[int]) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(
            "select status::text from cp.procedure where procedure_id = any(%s) order by procedure_id", [ids])]


async def test_an_adapter_per_shard_settles_its_shards_charges(sharded):
    clock = SimClock()
    sim = make_simulators(clock, codes=[CARRIER])[CARRIER]
    async with sim:
        document = await asyncio.to_thread(simulated_merchant, sharded, "daemon_shop", sim, CARRIER)
        payments: dict[int, list[int]] = {0: [], 1: []}
        async with await psycopg.AsyncConnection.connect(login_url(sharded, document), autocommit=True) as api:
            for partition in (0, 1):
                for n in range(3):
                    number = msisdn_on(sharded, partition, 100 * n, prefix="+4477009")
                    cur = await api.execute("select api.charge('daemon_shop', %s, 'gems', %s)",
                                            [number, f"daemon-{partition}-{n}"])
                    payments[partition].append((await cur.fetchone())[0]["id"])
        assert {p: {i >> PARTITION_ID_BITS for i in ids} for p, ids in payments.items()} == {0: {0}, 1: {1}}

        stop = asyncio.Event()
        factory = connector_factory(secrets=SECRETS)
        daemons = [AdapterDaemon(url, factory, poll_interval=0.1, lease=timedelta(seconds=30))
                   for url in sharded.shard_urls]
        tasks = [asyncio.ensure_future(daemon.run(stop)) for daemon in daemons]
        try:
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                done = [await asyncio.to_thread(statuses, url, payments[partition])
                        for partition, url in enumerate(sharded.shard_urls)]
                if all(status in ("succeeded", "failed") for shard in done for status in shard):
                    break
                assert asyncio.get_running_loop().time() < deadline, done
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    # Each shard's charges were settled by its own adapter: collected exactly where the carrier charged,
    # per shard, and in total through the front's merged ledger report.
    succeeded = [shard.count("succeeded") for shard in done]
    assert all(0 < count for count in succeeded), done
    for partition, url in enumerate(sharded.shard_urls):
        assert await asyncio.to_thread(receivable, url) == succeeded[partition] * 300
    assert sim.ledger.charged_total() == sum(succeeded) * 300
    assert await asyncio.to_thread(receivable, sharded.front_url) == sim.ledger.charged_total()
