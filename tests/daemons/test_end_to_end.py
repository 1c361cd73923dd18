"""api.charge → adapter daemon → simulator → complete → procedure final, for each dialect, over real sockets."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from harness import CARRIERS, MERCHANT, World, charge_requests, msisdn
from psycopg.types.json import Jsonb


@pytest.mark.parametrize("carrier", list(CARRIERS))
async def test_charge_succeeds_once_and_the_ledger_balances(db_url, carrier):
    async with World(db_url, carriers=[carrier], reconciler=True) as world:
        sim = world.sims[carrier]
        amount = CARRIERS[carrier][2]
        number, _ = await world.paid(carrier, 101, amount * 3, "k-1")
        assert len(sim.ledger.charges(number)) == 1
        assert sim.ledger.charged_total(number) == amount
        assert await world.journals_balanced()
        assert await world.receivable(carrier) == amount


@pytest.mark.parametrize("carrier", list(CARRIERS))
async def test_insufficient_funds_fails_without_charging(db_url, carrier):
    async with World(db_url, carriers=[carrier], reconciler=True) as world:
        sim = world.sims[carrier]
        number = world.subscriber(carrier, 102, CARRIERS[carrier][2] - 1)
        payment = await world.charge(number, "k-poor")
        status = await world.settled(carrier, payment)
        assert status == "failed"
        assert await world.one("select reason from cp.procedure where procedure_id = %s", payment) == \
            "insufficient_funds"
        assert sim.ledger.charges(number) == []
        assert await world.receivable(carrier) == 0


@pytest.mark.parametrize("carrier", list(CARRIERS))
async def test_refund_reverses_the_charge_at_the_carrier_and_in_the_ledger(db_url, carrier):
    async with World(db_url, carriers=[carrier], reconciler=True) as world:
        sim = world.sims[carrier]
        amount = CARRIERS[carrier][2]
        number, payment = await world.paid(carrier, 103, amount * 2, "k-r")
        refund = (await world.one("select api.refund(%s, %s, 'r-1')", MERCHANT, payment))["id"]
        status = await world.settled(carrier, refund)
        assert status == "succeeded"
        assert await world.status(payment) == "refunded"
        assert sim.ledger.refunded_total(number) == amount
        assert sim.balance(number) == amount * 2
        assert await world.journals_balanced()
        assert await world.receivable(carrier) == 0


@pytest.mark.parametrize("carrier", list(CARRIERS))
async def test_balance_check_reports_the_carriers_balance(db_url, carrier):
    async with World(db_url, carriers=[carrier]) as world:
        number = world.subscriber(carrier, 104, 12_345)
        check = (await world.one("select api.check_balance(%s, %s, 20000, %s)", MERCHANT, number,
                                 f"balance-{carrier}"))["id"]
        assert await world.wait_status(check) == "succeeded"
        result = await world.one("select result from cp.procedure where procedure_id = %s", check)
        assert result == {"balance_minor": 12_345, "sufficient": False}


@pytest.mark.parametrize("carrier", ["oneapi_gb", "parlayx_za", "aggregator_ng", "batch_in"])
async def test_a_throttled_charge_is_requeued_with_the_same_correlator_and_charged_once(db_url, carrier):
    async with World(db_url, carriers=[carrier], reconciler=True) as world:
        sim = world.sims[carrier]
        number = world.subscriber(carrier, 105, 100_000)
        sim.faults.inject("throttle", operation="charge", times=2)
        payment = await world.charge(number, "k-t")
        # Throttled calls wait 5 s of database time before their next turn.
        await world.wait_until("select carrier_code is not null from cp.carrier_call where procedure_id = %s",
                               payment)
        for _ in range(2):
            await world.advance(timedelta(seconds=6))
            await asyncio.sleep(0.3)
        status = await world.settled(carrier, payment)
        assert status == "succeeded"
        calls = await world.q("select correlator from cp.carrier_call where procedure_id = %s and operation = 'charge'",
                              payment)
        assert len(calls) == 1  # one call, repeated under one correlator
        assert len(sim.ledger.charges(number)) == 1
        assert len(charge_requests(sim)) == 3  # twice throttled, then charged


@pytest.mark.parametrize("carrier", ["oneapi_gb", "parlayx_za", "aggregator_ng"])
async def test_timeout_after_charge_is_unknown_then_reconciled_without_a_second_charge(db_url, carrier):
    async with World(db_url, carriers=[carrier], reconciler=True, timeout_s=0.5) as world:
        sim = world.sims[carrier]
        sim.faults.late_response_s = 1.0
        if carrier == "aggregator_ng":
            sim.callback_attempts = 0  # the result callback is lost too: only a status query can tell
        amount = CARRIERS[carrier][2]
        number = world.subscriber(carrier, 106, amount * 5)
        sim.faults.inject("timeout_after_charge", operation="charge")
        payment = await world.charge(number, "k-u")
        assert await world.wait_status(payment, ("unknown",)) == "unknown"
        assert len(sim.ledger.charges(number)) == 1  # the carrier did charge
        await asyncio.sleep(0.5)  # the reconciler must not touch it before its back-off is due
        assert await world.status(payment) == "unknown"
        await world.advance(timedelta(minutes=6))
        assert await world.wait_status(payment) == "succeeded"
        assert len(sim.ledger.charges(number)) == 1
        assert len(charge_requests(sim)) == 1  # never sent again: settled by a status query
        assert await world.receivable(carrier) == amount
        assert await world.journals_balanced()


async def test_a_slow_carrier_does_not_hold_up_the_others(db_url):
    async with World(db_url, carriers=["oneapi_gb", "parlayx_za"], timeout_s=10.0) as world:
        slow, quick = world.sims["oneapi_gb"], world.sims["parlayx_za"]
        slow.faults.latency_s = 4.0  # every answer takes 4 s (inside the 10 s timeout)
        slow.add_subscriber(msisdn("oneapi_gb", 401), 10_000)
        quick.add_subscriber(msisdn("parlayx_za", 402), 10_000)
        waiting = await world.charge(msisdn("oneapi_gb", 401), "k-slow")
        await world.wait_until("select status = 'leased' from cp.carrier_call where procedure_id = %s", waiting)
        # Charged while the slow carrier's batch is still out: settled without waiting for it.
        settled = await world.charge(msisdn("parlayx_za", 402), "k-quick")
        assert await world.wait_status(settled) == "succeeded"
        assert await world.status(waiting) == "in_flight"
        assert await world.wait_status(waiting) == "succeeded"
        assert len(slow.ledger.charges(msisdn("oneapi_gb", 401))) == 1
        assert len(quick.ledger.charges(msisdn("parlayx_za", 402))) == 1


async def test_a_refund_no_route_can_settle_is_left_to_an_operator(db_url):
    """A refund whose answer was lost, on a carrier that does not deduplicate refunds and whose status
    query knows payments only: asked about the refund, that query would say "no such transaction" of
    a refund it applied. The reconciler does not ask it; after three turns the refund is listed for
    an operator, whose settlement the ledger follows."""
    async with World(db_url, carriers=["oneapi_gb"], reconciler=True, timeout_s=0.5) as world:
        sim = world.sims["oneapi_gb"]
        sim.flavor.status_kinds = ("charge", "capture")
        spec = world.specs["oneapi_gb"]
        spec["operations"]["refund"]["safe_to_repeat"] = False
        spec["operations"]["status"]["covers"] = ["charge"]
        await world.q("select admin.onboard_carrier(%s)", Jsonb(spec))
        amount = CARRIERS["oneapi_gb"][2]
        number = world.subscriber("oneapi_gb", 501, amount * 2)
        payment = await world.charge(number, "k-paid")
        assert await world.wait_status(payment) == "succeeded"

        sim.faults.late_response_s = 1.0
        sim.faults.inject("timeout_after_charge", operation="refund")  # applied, its answer lost
        refund = (await world.one("select api.refund(%s, %s, 'r-lost', null, 'test')", MERCHANT, payment))["id"]
        assert await world.wait_status(refund, ("unknown",)) == "unknown"
        assert len(sim.ledger.refunds(number)) == 1
        call_id, correlator = (await world.q(
            "select call_id, correlator from cp.carrier_call where procedure_id = %s", refund))[0]

        await asyncio.sleep(1.0)  # twice the carrier's timeout: the call is quiet
        for turn, wait in enumerate((timedelta(minutes=6), timedelta(hours=1), timedelta(days=1)), start=1):
            await world.advance(wait)
            await world.wait_until("select reconcile_attempts >= %s or status <> 'unknown' from cp.carrier_call "
                                   "where call_id = %s", turn, call_id)
            assert await world.status(refund) == "unknown", "a status query that knows no refunds settled it"
        asked = [r for r in sim.received if r["method"] == "GET" and r["query"].get("clientCorrelator") == correlator]
        assert asked == [], "the status query was asked about a refund it does not know"
        assert await world.q("select call_id, operation, status::text from report.calls_needing_operator") == [
            (call_id, "refund", "unknown")]

        settled = await world.one("select admin.settle_call(%s, 'succeeded', 'operator portal: refund applied')",
                                  call_id)
        assert (settled["status"], settled["procedure_status"]) == ("done", "succeeded")
        assert await world.status(payment) == "refunded"
        assert await world.q("select * from report.calls_needing_operator") == []
        assert await world.receivable("oneapi_gb") == sim.ledger.charged_total() - sim.ledger.refunded_total() == 0
        assert await world.journals_balanced()
