"""The simulators' own money model: top-up habits by local hour, seeding, idempotency, the ledger."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
import pytest

from carrierpay.simulators.aggregator import AggregatorSimulator
from carrierpay.simulators.base import Billing, SimClock
from carrierpay.simulators.batch import BatchSimulator
from carrierpay.simulators.oneapi import OneApiSimulator
from carrierpay.simulators.parlayx import ParlayXSimulator


def billing(seed: int = 1, timezone: str = "Africa/Lagos") -> Billing:
    import random

    clock = SimClock(datetime(2025, 3, 3, 4, 0, tzinfo=UTC))  # 05:00 in Lagos
    return Billing(clock=clock, rng=random.Random(seed), currency="NGN", timezone=timezone, txid_prefix="T")


def test_top_ups_land_at_the_subscribers_habitual_local_hour():
    bank = billing()
    bank.add_subscriber("+2348030000001", 100, topup_hour=18, topup_minor=1000)
    assert bank.balance("+2348030000001") == 100
    bank.clock.set(datetime(2025, 3, 3, 16, 59, tzinfo=UTC))  # 17:59 local: not yet
    assert bank.balance("+2348030000001") == 100
    bank.clock.set(datetime(2025, 3, 3, 17, 0, tzinfo=UTC))  # 18:00 local
    assert bank.balance("+2348030000001") == 1100
    bank.clock.advance(days=2)  # two more evenings
    assert bank.balance("+2348030000001") == 3100


def test_a_charge_that_fails_in_the_morning_succeeds_after_the_evening_top_up():
    bank = billing()
    bank.add_subscriber("+2348030000002", 0, topup_hour=19, topup_minor=500)
    assert bank.charge("m1", "+2348030000002", 300).code == "insufficient_funds"
    bank.clock.set(datetime(2025, 3, 3, 19, 30, tzinfo=UTC))
    assert bank.charge("e1", "+2348030000002", 300).ok
    assert bank.ledger.charged_total() == 300


def test_unknown_subscribers_are_generated_reproducibly_from_the_seed():
    first, second, other = billing(seed=42), billing(seed=42), billing(seed=43)
    numbers = [f"+23480300001{i:02d}" for i in range(5)]
    assert [first.balance(n) for n in numbers] == [second.balance(n) for n in numbers]
    assert [first.balance(n) for n in numbers] != [other.balance(n) for n in numbers]
    first.unknown_prefixes.append("+23480399")
    assert first.balance("+2348039900000") is None


def test_idempotency_by_correlator_and_refund_limits():
    bank = billing()
    bank.add_subscriber("+2348030000003", 1000)
    first = bank.charge("c1", "+2348030000003", 400)
    again = bank.charge("c1", "+2348030000003", 400)
    assert again.repeated and again.transaction is first.transaction
    assert bank.ledger.charged_total() == 400 and bank.balance("+2348030000003") == 600
    assert bank.refund("r1", "+2348030000003", 500, first.transaction.txid).code == "limit_exceeded"
    assert bank.refund("r2", "+2348030000003", 400, first.transaction.txid).ok
    assert bank.refund("r3", "+2348030000003", 1, first.transaction.txid).code == "limit_exceeded"
    assert bank.ledger.refunded_total() == 400 and bank.balance("+2348030000003") == 1000


def test_reservations_hold_balance_until_captured():
    bank = billing()
    bank.add_subscriber("+2348030000004", 1000)
    hold = bank.reserve("h1", "+2348030000004", 700)
    assert bank.balance("+2348030000004") == 300
    assert bank.reserve("h2", "+2348030000004", 700).code == "insufficient_funds"
    assert bank.capture("c1", hold.transaction.txid, 700).ok
    assert bank.balance("+2348030000004") == 300 and bank.ledger.charged_total() == 700


def test_unknown_fault_names_are_refused():
    with pytest.raises(ValueError, match="unknown fault"):
        OneApiSimulator().faults.inject("meteor_strike")


@pytest.mark.parametrize("kind", [OneApiSimulator, ParlayXSimulator, AggregatorSimulator, BatchSimulator])
async def test_each_simulator_binds_an_ephemeral_loopback_port_and_refuses_anonymous_requests(kind):
    async with kind() as sim:
        assert sim.url.startswith("http://127.0.0.1:") and not sim.url.endswith(":0")
        path = {
            "oneapi": "/1/payment/tel:+1/transactions/amount",
            "parlayx": "/ParlayXPaymentAmountChargingService/services/AmountCharging",
            "aggregator": "/v1/charges",
            "batch": "/api/v2/charges",
        }[sim.dialect]
        async with aiohttp.ClientSession() as session:
            async with session.post(sim.url + path, data=b"{}") as response:
                assert response.status in (401, 500)  # 500 is a SOAP fault
    assert sim.ledger.transactions == []


def test_a_reservation_is_refused_for_the_same_reasons_as_a_charge():
    bank = billing()
    bank.max_charge_minor = 1000
    bank.add_subscriber("+2348030000009", 5000)
    bank.add_subscriber("+2348030000010", 5000, state="barred")
    assert bank.reserve("v1", "+2348030000009", 1500).code == "limit_exceeded"
    assert bank.charge("c1", "+2348030000009", 1500).code == "limit_exceeded"
    assert bank.reserve("v2", "+2348030000010", 500).code == "barred"
    assert bank.reserve("v3", "+2348030000009", 800).code == "ok"
    assert bank.balance("+2348030000009") == 4200  # the reserved amount is held
