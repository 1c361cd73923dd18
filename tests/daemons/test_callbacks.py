"""The callback server with the aggregator: early, duplicate, late and forged callbacks."""

from __future__ import annotations

import asyncio

import aiohttp
from harness import CARRIERS, World, msisdn

NG = "aggregator_ng"
AMOUNT = CARRIERS[NG][2]


async def journals(world: World, payment: int) -> int:
    return await world.one("select count(*) from cp.journal where procedure_id = %s", payment)


async def test_early_and_duplicate_callbacks_settle_the_charge_once(db_url):
    async with World(db_url, carriers=[NG]) as world:
        sim = world.sims[NG]
        sim.callback_before_response = True  # the result arrives before the "accepted" answer
        sim.callback_duplicates = 3
        number = msisdn(NG, 201)
        sim.add_subscriber(number, AMOUNT * 2)
        payment = await world.charge(number, "k-early")
        assert await world.wait_status(payment) == "succeeded"
        # the callback, then the synchronous "accepted" (a no-op on a settled call)
        await world.wait_until("select count(*) >= 2 from cp.carrier_log where procedure_id = %s", payment)
        for _ in range(100):
            if world.callbacks.counts["duplicate"] >= 3:
                break
            await asyncio.sleep(0.05)
        assert world.callbacks.counts["duplicate"] == 3
        assert await journals(world, payment) == 1
        assert len(sim.ledger.charges(number)) == 1
        assert await world.one("select status::text from cp.carrier_call where procedure_id = %s", payment) == "done"
        assert await world.receivable(NG) == AMOUNT


async def test_forged_callback_is_refused_and_changes_nothing_then_the_real_one_settles(db_url):
    async with World(db_url, carriers=[NG]) as world:
        sim = world.sims[NG]
        sim.callback_attempts = 0  # hold the real callback back
        number = msisdn(NG, 202)
        sim.add_subscriber(number, AMOUNT * 2)
        payment = await world.charge(number, "k-forged")
        await world.wait_until("select bool_or(status = 'awaiting_result') from cp.carrier_call "
                               "where procedure_id = %s", payment)
        correlator = await world.one("select correlator from cp.carrier_call where procedure_id = %s", payment)
        forged = sim.callback_fields(sim.billing.lookup(correlator))
        forged["status"], forged["sig"] = "ok", "0" * 32
        url = world.callbacks.callback_url(NG)
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=forged) as answer:
                assert answer.status == 403
            async with http.post(url, data="garbage=1") as answer:
                assert answer.status in (400, 403)
            async with http.post(world.callbacks.callback_url("nobody"), data=forged) as answer:
                assert answer.status == 404
        assert await world.one("select count(*) from cp.callback_inbox") == 0
        assert await world.status(payment) == "in_flight"
        assert world.callbacks.counts["rejected"] >= 1

        await sim.send_late_callback(correlator)  # the genuine, late callback
        assert await world.wait_status(payment) == "succeeded"
        await sim.send_late_callback(correlator)  # and once more, later still
        assert await journals(world, payment) == 1
        assert await world.receivable(NG) == AMOUNT


async def test_a_failed_result_by_callback_fails_the_payment(db_url):
    async with World(db_url, carriers=[NG]) as world:
        sim = world.sims[NG]
        number = msisdn(NG, 203)
        sim.add_subscriber(number, 1)
        payment = await world.charge(number, "k-nofunds")
        assert await world.wait_status(payment) == "failed"
        assert await world.one("select reason from cp.procedure where procedure_id = %s", payment) == \
            "insufficient_funds"
        assert await journals(world, payment) == 0
