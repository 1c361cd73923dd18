"""A partition that is down: calls for its subscribers fail at once, nothing is written elsewhere, the
other partition carries on, and the partition takes calls again when it returns, its own daemons
settling what it held in flight."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import psycopg
import pytest

from carrierpay.adapters.daemon import AdapterDaemon
from carrierpay.adapters.reconciler import Reconciler
from carrierpay.adapters.registry import connector_factory
from carrierpay.migrate import PARTITION_ID_BITS
from carrierpay.simulators import SimClock
from carrierpay.simulators.fleet import SECRETS, make_simulators
from tests.shards.conftest import login_url, merchant, msisdn_on, simulated_merchant

CARRIER = "oneapi_gb"


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
            # A list without the stopped partition's rows would be a wrong answer: the merged list fails too.
            with pytest.raises(psycopg.Error) as partial:
                api.execute("select api.list_payments('outage_shop')")
            assert partial.value.sqlstate == "CP162" and "127.0.0.1" not in str(partial.value)
        with psycopg.connect(sharded.shard_urls[0]) as conn:
            assert conn.execute("select count(*) from cp.subscriber where msisdn = %s",
                                [down_number]).fetchone()[0] == 0
            assert conn.execute("select count(*) from cp.idempotency where idem_key = 'down-1'").fetchone()[0] == 0
    finally:
        partition_1.start()
    with psycopg.connect(login_url(sharded, document), autocommit=True) as api:
        back = api.execute("select api.charge('outage_shop', %s, 'gems', 'down-1')", [down_number]).fetchone()[0]
        assert back["status"] == "pending"
        listed = api.execute("select api.list_payments('outage_shop')").fetchone()[0]
        assert {item["paymentId"] for item in listed["payments"]} == {str(fine["id"]), str(back["id"])}


def _status(url: str, procedure_id: int) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("select status::text from cp.procedure where procedure_id = %s",
                            [procedure_id]).fetchone()[0]


async def test_a_returned_partition_settles_what_was_in_flight_with_its_own_daemons(sharded):
    clock = SimClock()
    sim = make_simulators(clock, codes=[CARRIER])[CARRIER]
    async with sim:
        document = await asyncio.to_thread(simulated_merchant, sharded, "return_shop", sim, CARRIER)
        away, staying = msisdn_on(sharded, 1, 700, prefix="+4477009"), msisdn_on(sharded, 0, 700, prefix="+4477009")
        for number in (away, staying):
            sim.add_subscriber(number, 10_000)
        url = login_url(sharded, document)
        factory = connector_factory(secrets=SECRETS)
        stop = asyncio.Event()

        def adapter(partition: int, until: asyncio.Event) -> asyncio.Future:
            return asyncio.ensure_future(AdapterDaemon(sharded.shard_urls[partition], factory, poll_interval=0.1,
                                                       lease=timedelta(seconds=30)).run(until))

        # In flight at the carrier: partition 1's adapter sends a charge, the carrier applies it and
        # the answer is lost (the outcome is unknown until someone asks the carrier).
        sim.faults.inject("drop_after_charge", operation="charge", times=1)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as api:
            cur = await api.execute("select api.charge('return_shop', %s, 'gems', 'in-flight-1')", [away])
            unknown = (await cur.fetchone())[0]
            first = asyncio.Event()
            sending = adapter(1, first)
            try:
                await _until(lambda: _call_status(sharded.shard_urls[1], unknown["id"]) == "unknown",
                             "the lost answer's call unknown")
            finally:
                first.set()
                await sending
            # Accepted and not yet sent when the partition stops.
            cur = await api.execute("select api.charge('return_shop', %s, 'gems', 'in-flight-2')", [away])
            queued = (await cur.fetchone())[0]
        assert queued["status"] == "pending" and {unknown["id"] >> PARTITION_ID_BITS,
                                                  queued["id"] >> PARTITION_ID_BITS} == {1}

        # Partition 1 goes down (its daemons with it); partition 0's own daemon carries on.
        port = psycopg.conninfo.conninfo_to_dict(sharded.shard_urls[1])["port"]
        partition_1 = next(cluster for cluster in sharded.clusters if str(cluster.port) == str(port))
        await asyncio.to_thread(partition_1.stop)
        tasks = [adapter(0, stop)]
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as api:
                cur = await api.execute("select api.charge('return_shop', %s, 'gems', 'carries-on-1')", [staying])
                other = (await cur.fetchone())[0]
            await _until(lambda: _status(sharded.shard_urls[0], other["id"]) == "succeeded",
                         "partition 0's charge settled")
            assert sim.ledger.charged_total() == 600  # the lost answer's charge, and partition 0's
        finally:
            await asyncio.to_thread(partition_1.start)

        # Back: partition 1's own adapter sends what was queued, and its reconciler asks the carrier
        # about the lost answer (once the carrier has had its minutes to settle it); nothing is
        # charged twice.
        await asyncio.to_thread(sharded.admin, "advance_clock", p_by=timedelta(minutes=10))
        tasks.append(adapter(1, stop))
        tasks.append(asyncio.ensure_future(Reconciler(sharded.shard_urls[1], factory, interval=0.2).run(stop)))
        try:
            for payment in (unknown, queued):
                await _until(lambda payment=payment: _status(sharded.shard_urls[1], payment["id"]) == "succeeded",
                             f"partition 1's {payment['id']} settled")
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert sim.ledger.charged_total() == 900
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as api:
            for payment in (unknown, queued):
                cur = await api.execute("select api.payment('return_shop', %s)", [payment["id"]])
                assert (await cur.fetchone())[0]["status"] == "succeeded"


def _call_status(url: str, procedure_id: int) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("select status::text from cp.carrier_call where procedure_id = %s and operation = 'charge' "
                           "order by call_id desc limit 1", [procedure_id]).fetchone()
        return row[0] if row else None


async def _until(condition, what: str, seconds: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await asyncio.to_thread(condition):
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not in time"
        await asyncio.sleep(0.1)
