"""Partial refunds at the carrier, end to end on every HTTP dialect: part of a payment refunded, then the
rest; each carrier's own ledger shows exactly what we booked, and the merchant hears of each refund."""

from __future__ import annotations

import pytest
from harness import CARRIERS, MERCHANT, World


@pytest.mark.parametrize("carrier", list(CARRIERS))
async def test_a_payment_refunded_in_two_parts(db_url, carrier):
    async with World(db_url, carriers=[carrier], reconciler=True) as world:
        sim = world.sims[carrier]
        await world.q("update cp.merchant set webhook_url = 'https://acme.example/hooks' where code = %s", MERCHANT)
        amount = CARRIERS[carrier][2]
        number, payment = await world.paid(carrier, 701, amount * 3, f"k-{carrier}")

        part = amount // 5 * 2
        first = (await world.one("select api.refund(%s, %s, 'r-1', %s, 'part')", MERCHANT, payment, part))["id"]
        assert await world.settled(carrier, first) == "succeeded"
        assert await world.status(payment) == "partially_refunded"
        assert sim.ledger.refunded_total(number) == part

        rest = (await world.one("select api.refund(%s, %s, 'r-2', null, 'rest')", MERCHANT, payment))["id"]
        assert await world.settled(carrier, rest) == "succeeded"
        assert await world.status(payment) == "refunded"
        assert [t.amount_minor for t in sim.ledger.refunds(number)] == [part, amount - part]
        assert await world.receivable(carrier) == sim.ledger.charged_total() - sim.ledger.refunded_total() == 0
        assert await world.q("select kind, (payload->>'amount_minor')::bigint from cp.merchant_notification "
                             "where kind like 'refund.%%' order by notification_id") == [
            ("refund.succeeded", part), ("refund.succeeded", amount - part)]
        assert await world.journals_balanced()
