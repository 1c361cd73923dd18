"""Carriers down for minutes while charges are queued and in flight: the daemons keep running, calls
that could not reach the carrier are held and sent again on a back-off, calls that timed out or were
cut off mid-request are reconciled and never sent again, and once the carriers are back every
payment is final, none charged twice, and our ledger equals each carrier's own to the minor unit.

Minutes on the project's clock: the business clock (and the simulators' clock) moves 30 s every
quarter of a second of real time, so the 10-minute outage takes about 5 s. A call that cannot reach
its carrier is tried again after as long as it has been held (5 s, 10 s, 20 s, ... at most 2
minutes apart; `cp.unreachable_retry_at`), so the outage spans several retry rounds per held call,
each one refused. Before falling over the carriers slow down past our 1 s timeout, so some charges
time out and the rest of those in flight are cut off: all of them are unknown (the carriers still
apply them). Their first reconciliation turn (5 minutes) falls inside the outage and gets no
answer; the next one (1 hour later) settles them after the carriers are back. The hold gives up
only after an hour, far beyond this outage. The adapter's lease is measured on the business clock
too, so it is an hour here (30 s of real time at this pace; production's 60 s is longer still in
proportion): a batch the clock outruns must not have its lease expire under it.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemons"))
from harness import CARRIERS, World, assert_each_payment_settled_once, msisdn  # noqa: E402

DIALECTS = ["oneapi_gb", "parlayx_za"]
BEFORE, SLOW, DURING = 20, 20, 20  # charges per carrier: before, while the carriers slow down, during the outage
OUTAGE_STEPS, STEP = 20, timedelta(seconds=30)  # 10 minutes of business time

OPEN = "select count(*) from cp.procedure where kind = 'charge' and status not in ('succeeded', 'failed')"


async def test_carriers_down_for_minutes_hold_calls_then_settle_each_payment_once(db_url):
    # parlayx_za does not deduplicate our correlator: its cut-off charges can only be settled by a
    # status query; oneapi_gb does.
    async with World(db_url, carriers=DIALECTS, reconciler=True, adapters=False, timeout_s=1.0,
                     not_deduplicated=("parlayx_za",)) as world:
        world.daemon.lease = timedelta(hours=1)
        world.start_adapters()
        for sim in world.sims.values():
            sim.faults.latency_s, sim.faults.latency_jitter_s = 0.05, 0.2  # so calls are in flight
        payments: dict[int, str] = {}
        during: list[int] = []

        async def charge(code: str, n: int) -> int:
            amount = CARRIERS[code][2]
            number = msisdn(code, 4000 + n)
            world.sims[code].add_subscriber(number, amount - 1 if n % 5 == 0 else amount * 3)  # some cannot pay
            payment = await world.charge(number, f"outage-{code}-{n}")
            payments[payment] = code
            return payment

        for code in DIALECTS:
            for n in range(BEFORE):
                await charge(code, n)
        await world.until_carriers_hold(10)

        # ---- the carriers slow down beyond our timeout, then go down with requests in flight
        for sim in world.sims.values():
            sim.faults.latency_s = 1.5
        for code in DIALECTS:
            for n in range(BEFORE, BEFORE + SLOW // 2):
                await charge(code, n)
        await asyncio.sleep(1.2)  # these time out after 1 s
        in_flight = [await charge(code, n) for code in DIALECTS for n in range(BEFORE + SLOW // 2, BEFORE + SLOW)]
        await world.wait_until("select count(*) = 0 from cp.carrier_call where procedure_id = any(%s) "
                               "and sent_at is null", in_flight)
        await asyncio.sleep(0.2)  # these are at the carriers, which take 1.5 s to answer
        for sim in world.sims.values():
            await sim.go_down()
            sim.faults.latency_s = 0.05
        # ---- and new charges keep coming during the outage
        for code in DIALECTS:
            for n in range(BEFORE + SLOW, BEFORE + SLOW + DURING):
                during.append(await charge(code, n))
        await world.wait_until("select count(*) >= %s from cp.carrier_call where unreachable_since is not null",
                               len(during))
        cut_off = {row[0] for row in await world.q(
            "select procedure_id from cp.procedure where kind = 'charge' and status = 'unknown'")}
        unknown = dict(await world.q("select latency_ms >= 1000, count(*) from cp.carrier_log "
                                     "where operation = 'charge' and outcome = 'unknown' group by 1"))
        assert unknown.get(True) and unknown.get(False), f"some charges time out, others are cut off: {unknown}"
        assert len(cut_off) == sum(unknown.values())
        for _ in range(OUTAGE_STEPS):
            await asyncio.sleep(0.25)
            await world.advance(STEP)
        assert not any(task.done() for task in world.tasks), "a daemon stopped during the outage"

        # Nothing was given up on or settled without the carriers, and no attempt was used up.
        assert await world.one("select count(*) from cp.procedure where kind = 'charge' and status = 'failed' "
                               "and reason in ('unreachable', 'transient', 'unknown')") == 0
        assert await world.one("select max(attempt) from cp.carrier_call where operation = 'charge'") == 1
        assert {row[0] for row in await world.q(
            "select procedure_id from cp.procedure where kind = 'charge' and status = 'unknown'")} == cut_off
        assert await world.one("select count(*) from cp.procedure where procedure_id = any(%s) "
                               "and status <> 'in_flight'", during) == 0
        # Each held call was refused round after round on the back-off, not in a hot loop.
        rounds = [row[0] for row in await world.q(
            "select count(*) from cp.carrier_log where reason = 'unreachable' and procedure_id = any(%s) "
            "group by procedure_id", during)]
        assert len(rounds) == len(during)
        assert min(rounds) >= 5, f"the outage should span several retry rounds: {sorted(rounds)}"
        assert max(rounds) <= OUTAGE_STEPS + 2, f"retried faster than the back-off allows: {sorted(rounds)}"
        assert all(sim.down for sim in world.sims.values())

        # ---- the carriers come back
        for sim in world.sims.values():
            await sim.come_back()
        for _ in range(80):
            open_ = await world.one(OPEN)
            if open_ == 0:
                break
            await asyncio.sleep(0.25)
            await world.advance(timedelta(minutes=6))  # held calls are due; reconciliation turns come round
        assert open_ == 0, await world.q("select status::text, count(*) from cp.procedure group by 1")
        assert not any(task.done() for task in world.tasks), "a daemon stopped"

        statuses = await assert_each_payment_settled_once(world, payments)
        assert statuses.get("succeeded", 0) > len(payments) // 2
        # Payments made during the outage went through with their first and only call, or failed for
        # the subscriber's own reason, never for the outage.
        reasons = dict(await world.q("select coalesce(reason, 'none'), count(*) from cp.procedure "
                                     "where procedure_id = any(%s) group by 1", during))
        assert set(reasons) <= {"none", "insufficient_funds"}, reasons
        assert await world.one("select count(*) from cp.carrier_call where procedure_id = any(%s) "
                               "and operation = 'charge'", during) == len(during)
        assert await world.one("select count(*) from cp.carrier_call where procedure_id = any(%s) "
                               "and reconcile_attempts >= 2", list(cut_off)) > 0, \
            "cut-off charges meet the outage at one reconciliation turn and are settled at a later one"
