"""api.charge → adapter daemon → simulator → complete → procedure final, for each dialect, over real sockets."""

from __future__ import annotations

import pytest
from harness import CARRIERS, World, msisdn


@pytest.mark.parametrize("carrier", list(CARRIERS))
async def test_charge_succeeds_once_and_the_ledger_balances(db_url, carrier):
    async with World(db_url, carriers=[carrier], reconciler=True) as world:
        sim = world.sims[carrier]
        number = msisdn(carrier, 101)
        amount = CARRIERS[carrier][2]
        sim.add_subscriber(number, amount * 3)
        payment = await world.charge(number, "k-1")
        if carrier == "batch_in":  # accepted now; the day's result file settles it later
            await world.wait_status(payment, ("in_flight",))
            await world.advance(__import__("datetime").timedelta(hours=2))
        assert await world.wait_status(payment) == "succeeded"
        assert len(sim.ledger.charges(number)) == 1
        assert sim.ledger.charged_total(number) == amount
        assert await world.journals_balanced()
        assert await world.receivable(carrier) == amount
