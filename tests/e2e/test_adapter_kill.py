"""Kill the adapter with SIGKILL while hundreds of charges are in flight, then let a new adapter and
the reconciler finish: every payment ends final, none is charged twice at any carrier, and our
ledger agrees with each carrier's own ledger to the minor unit."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemons"))
from harness import SECRETS, World, assert_each_payment_settled_once  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DIALECTS = ["oneapi_gb", "parlayx_za", "aggregator_ng"]
PER_CARRIER = 100


async def start_adapter(world: World, log: Path) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        **SECRETS,
        "PYTHONPATH": str(REPO),
        "CARRIERPAY_DATABASE_URL": world.url,
        "CARRIERPAY_CALLBACK_BASE_URL": world.callbacks.base_url,
    }
    handle = log.open("ab")
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "carrierpay", "adapters", "run", "--batch", "40", "--lease", "20", "--poll", "0.1",
        env=env, stdout=handle, stderr=handle, cwd=str(REPO),
    )


async def stop(process: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> None:
    if process.returncode is None:
        process.send_signal(sig)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def test_sigkill_mid_flight_loses_and_doubles_nothing(db_url, tmp_path):
    log = tmp_path / "adapter.log"
    # parlayx_za is treated as a carrier that does not deduplicate: its expired charges become
    # unknown and must be settled by status query; the others are requeued under the same correlator.
    async with World(db_url, carriers=DIALECTS, adapters=False, timeout_s=3.0,
                     not_deduplicated=("parlayx_za",)) as world:
        for sim in world.sims.values():
            sim.faults.latency_s, sim.faults.latency_jitter_s = 0.2, 0.4  # so calls are in flight
        payments = await world.charge_many(DIALECTS, PER_CARRIER, first=1000, key="kill", poor_every=5)

        first = await start_adapter(world, log)
        try:
            await world.until_carriers_hold(40, lambda: log.read_text()[-3000:])
        finally:
            await stop(first, signal.SIGKILL)
        leased = await world.one("select count(*) from cp.call_queue where lease_until is not null")
        assert leased > 0, "the kill should leave leased calls behind"

        # Requests the dead adapter sent may still be in the carriers' hands: the reconciler does not
        # query their status before twice the carrier's timeout has passed in real time, so
        # "no such transaction" can only mean "not charged". The business clock moves on at once.
        # The dead adapter's leases run out; the reconciler expires them, a new adapter carries on.
        await world.advance(timedelta(minutes=1))
        second = await start_adapter(world, log)
        world.start_reconciler()
        try:
            assert await world.open_charges_after(120) == 0, log.read_text()[-3000:]
        finally:
            await stop(second)

        statuses = await assert_each_payment_settled_once(world, payments)
        assert statuses["succeeded"] >= 2 * len(DIALECTS)
        reconciled = await world.one("select count(*) from cp.carrier_call where reconcile_attempts > 0")
        assert reconciled > 0, "some charges should have gone through reconciliation"
        assert "Traceback" not in log.read_text()
