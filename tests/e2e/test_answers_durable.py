"""No carrier answer is lost: an adapter records each answer as it arrives, not with the rest of its
batch, and keeps the answers it could not record while the database connection was down.

Against one carrier that deduplicates our correlator and one that does not (a charge or refund sent
twice is applied twice): collect payments; SIGKILL the adapter while fast refunds share a batch with
a charge the carrier is slow to answer (it would time out); then, with a new adapter, cut its
database connections while the carrier holds the answers of a batch, and release them. Every refund
the carrier applied must be recorded by the adapter itself (before any reconciliation), every
refund and charge must end final, our carrier receivable must equal the carrier's net, and nothing
may be sent twice to the carrier that does not deduplicate.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemons"))
from harness import CARRIERS, MERCHANT, World, msisdn  # noqa: E402

from tests.e2e.test_adapter_kill import start_adapter, stop  # noqa: E402

CARRIER = "oneapi_gb"
PAID = 12  # payments collected first
REFUNDS_A = 6  # refunded in the batch with the slow charge, then the adapter is SIGKILLed
REFUNDS_B = 6  # refunded in the batch whose answers arrive while the database connection is cut
CHARGES_B = 4  # charged in that batch too
CHARGE_TIMEOUT_S = 12.0  # how long the adapter waits for a charge's answer (other calls: 3 s)
RECORDED_WITHIN_S = 8.0  # a generous bound for answers recorded "at once", below CHARGE_TIMEOUT_S
FINAL = ("succeeded", "failed", "refunded", "partially_refunded")


async def refund(world: World, payment_id: int, key: str) -> int:
    document = await world.one("select api.refund(%s, %s, %s, null, 'test')", MERCHANT, payment_id, key)
    return document["id"]


async def status(world: World, procedure_ids: list[int]) -> dict[int, str]:
    rows = await world.q("select procedure_id, status::text from cp.procedure where procedure_id = any(%s)",
                         procedure_ids)
    return dict(rows)


async def call_status(world: World, procedure_id: int) -> str:
    return await world.one("select status::text from cp.carrier_call where procedure_id = %s "
                           "order by call_id desc limit 1", procedure_id)


async def correlators(world: World, procedure_ids: list[int]) -> dict[int, str]:
    """Each procedure's correlator (every procedure here has exactly one carrier call)."""
    rows = await world.q("select procedure_id, correlator from cp.carrier_call where procedure_id = any(%s) "
                         "and operation in ('charge', 'refund')", procedure_ids)
    assert len(rows) == len(procedure_ids)
    return dict(rows)


async def until(predicate, what: str, log: Path, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, f"{what}\n{log.read_text()[-3000:]}"
        await asyncio.sleep(0.02)


def sent(sim, operation_status: str) -> list[str]:
    """The clientCorrelator of every charge (Charged) or refund (Refunded) request the carrier received."""
    found = []
    for request in sim.received:
        if request["method"] == "POST" and request["path"].endswith("/transactions/amount"):
            transaction = json.loads(request["body"])["amountTransaction"]
            if transaction["transactionOperationStatus"] == operation_status:
                found.append(transaction["clientCorrelator"])
    return found


@pytest.mark.parametrize("deduplicates", [True, False], ids=["deduplicating", "not_deduplicating"])
async def test_every_answer_is_recorded_once_through_kills_and_a_dropped_connection(db_url, tmp_path, deduplicates):
    log = tmp_path / "adapter.log"
    async with World(db_url, carriers=[CARRIER], adapters=False, timeout_s=3.0) as world:
        sim = world.sims[CARRIER]
        spec = world.specs[CARRIER]
        spec["operations"]["charge"]["timeout_s"] = CHARGE_TIMEOUT_S
        if not deduplicates:
            # A carrier that ignores our correlator: whatever is sent twice is applied twice.
            sim.billing.deduplicates = False
            for operation in ("charge", "refund"):
                spec["operations"][operation]["safe_to_repeat"] = False
        await world.q("select admin.onboard_carrier(%s)", Jsonb(spec))
        amount = CARRIERS[CARRIER][2]
        numbers = iter(msisdn(CARRIER, 3000 + n) for n in range(100))

        async def charge(key: str) -> int:
            number = next(numbers)
            sim.add_subscriber(number, amount * 3)
            return await world.charge(number, key)

        paid = [await charge(f"paid-{n}") for n in range(PAID)]
        adapter = await start_adapter(world, log)
        try:
            async def collected() -> bool:
                return set((await status(world, paid)).values()) == {"succeeded"}
            await until(collected, "the payments were not collected", log)

            # A: fast refunds in one batch with a charge the carrier applies but is slow to answer
            # (it holds the answer; the adapter would time out on it): SIGKILL the adapter meanwhile.
            sim.faults.hold("charge")
            async with world.conn.transaction():
                slow = await charge("slow-a")
                refunds_a = [await refund(world, payment, f"refund-a-{n}")
                             for n, payment in enumerate(paid[:REFUNDS_A])]
            deadline = asyncio.get_running_loop().time() + RECORDED_WITHIN_S
            while asyncio.get_running_loop().time() < deadline:
                if set((await status(world, refunds_a)).values()) == {"succeeded"}:
                    break
                await asyncio.sleep(0.02)
            slow_then = await call_status(world, slow)
            await stop(adapter, signal.SIGKILL)
            sim.faults.release("charge")  # its answer goes to a closed connection
            refunded_by_carrier = {t.correlator for t in sim.ledger.refunds()}
            recorded = await status(world, refunds_a)
            lost = [refund_id for refund_id, correlator in (await correlators(world, refunds_a)).items()
                    if correlator in refunded_by_carrier and recorded[refund_id] != "succeeded"]
            assert lost == [], f"refunds applied by the carrier but unknown with us: {lost}"
            assert len(refunded_by_carrier) == REFUNDS_A
            assert slow_then == "leased", "the slow charge was still with the carrier when the adapter died"

            # B: a new adapter; the carrier holds the answers of a batch while the adapter's database
            # connections are cut, then answers.
            adapter = await start_adapter(world, log)
            warm = await charge("warm-b")  # so the adapter holds an open connection for its answers

            async def warmed() -> bool:
                return (await status(world, [warm]))[warm] == "succeeded"
            await until(warmed, "the warm-up charge was not recorded", log)
            sim.faults.hold("charge")
            sim.faults.hold("refund")
            async with world.conn.transaction():
                charges_b = [await charge(f"charge-b-{n}") for n in range(CHARGES_B)]
                refunds_b = [await refund(world, payment, f"refund-b-{n}")
                             for n, payment in enumerate(paid[REFUNDS_A:REFUNDS_A + REFUNDS_B])]
            batch_b = charges_b + refunds_b
            wanted = set((await correlators(world, batch_b)).values())

            async def all_applied_by_carrier() -> bool:
                return wanted <= {t.correlator for t in sim.ledger.transactions}
            await until(all_applied_by_carrier, "the carrier did not get the batch", log)
            cut = await world.one(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                "where datname = current_database() and application_name = 'carrierpay adapters'")
            assert cut >= 3, "the adapter's claim, listen and answer connections"
            sim.faults.release("charge")
            sim.faults.release("refund")

            async def batch_recorded() -> bool:
                rows = await world.q("select count(*) from cp.carrier_call where procedure_id = any(%s) "
                                     "and status in ('queued', 'leased')", batch_b)
                return rows[0][0] == 0
            await until(batch_recorded, "answers held while the connection was cut were not recorded", log)
            answered = await status(world, batch_b)
            assert set(answered.values()) == {"succeeded"}, answered

            # C: the reconciler settles what was lost with the SIGKILLed adapter (the slow charge).
            await world.advance(timedelta(minutes=1))  # its lease runs out
            world.start_reconciler()
            everything = [*paid, slow, warm, *charges_b, *refunds_a, *refunds_b]
            for _ in range(120):
                if set((await status(world, everything)).values()) <= set(FINAL):
                    break
                await asyncio.sleep(0.5)
                await world.advance(timedelta(minutes=6))  # reconciliation back-off is due
        finally:
            await stop(adapter)

        statuses = await status(world, everything)
        assert set(statuses.values()) <= set(FINAL), statuses
        assert {statuses[r] for r in refunds_a + refunds_b} == {"succeeded"}
        # Each charge applied at most once, succeeded exactly when applied; each refund applied once.
        for procedure_id, correlator in (await correlators(world, [*paid, slow, warm, *charges_b])).items():
            charged = sim.ledger.charges(correlator=correlator)
            assert len(charged) <= 1, (procedure_id, charged)
            assert (statuses[procedure_id] in ("succeeded", "refunded")) == (len(charged) == 1), procedure_id
        refund_correlators = (await correlators(world, refunds_a + refunds_b)).values()
        assert sorted(t.correlator for t in sim.ledger.refunds()) == sorted(refund_correlators)
        assert await world.receivable(CARRIER) == sim.ledger.charged_total() - sim.ledger.refunded_total()
        assert await world.journals_balanced()
        if not deduplicates:
            # Nothing the carrier would apply twice was sent twice.
            charges_sent = sent(sim, "Charged")
            assert len(charges_sent) == len(set(charges_sent)), "a charge was sent twice"
            refunds_sent = sent(sim, "Refunded")
            assert len(refunds_sent) == len(set(refunds_sent)), "a refund was sent twice"
        assert "Traceback" not in log.read_text()
