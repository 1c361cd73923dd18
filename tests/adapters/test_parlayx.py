"""The ParlayX 2.1 (SOAP, MD5 header digest) carrier end to end over real sockets."""

from __future__ import annotations

import contextlib

import pytest
from carrier_kit import PARLAYX_ZA_SECRETS, assert_no_secrets, make_call, simulated_spec, status_call

from carrierpay.adapters.http import HttpConnector
from carrierpay.simulators.parlayx import ParlayXSimulator

MSISDN = "+27825550101"


def za_call(operation: str = "charge", **fields):
    return make_call(operation, **{"msisdn": MSISDN, "currency": "ZAR", "amount_minor": 500, **fields})


@contextlib.asynccontextmanager
async def parlayx(balance: int = 2000, *, secrets=None, charge_timeout_s: float | None = None):
    simulator = ParlayXSimulator(
        sp_id=PARLAYX_ZA_SECRETS["PARLAYX_ZA_SP_ID"], sp_password=PARLAYX_ZA_SECRETS["PARLAYX_ZA_SP_PASSWORD"], seed=3
    )
    async with simulator:
        spec = simulated_spec(simulator, "parlayx_za", MSISDN, balance, charge_timeout_s)
        async with HttpConnector(spec, secrets or PARLAYX_ZA_SECRETS) as connector:
            yield simulator, connector


async def test_charge_in_cents_with_a_valid_digest():
    async with parlayx(balance=2000) as (sim, connector):
        result = await connector.execute(za_call(amount_minor=500))
    assert (result["outcome"], result["reason"]) == ("succeeded", None)
    assert sim.ledger.charged_total(MSISDN) == 500
    assert sim.balance(MSISDN) == 1500
    assert "<amount>500</amount>" in result["request"]["body"]


async def test_bad_digest_is_rejected_by_the_sdp_and_maps_to_rejected():
    wrong = {**PARLAYX_ZA_SECRETS, "PARLAYX_ZA_SP_PASSWORD": "not-the-password"}
    async with parlayx(secrets=wrong) as (sim, connector):
        result = await connector.execute(za_call())
    assert (result["outcome"], result["reason"], result["carrier_code"]) == ("failed", "rejected", "SVC0901")
    assert sim.rejected_digests == 1
    assert sim.ledger.charged_total() == 0


async def test_insufficient_funds_fault():
    async with parlayx(balance=100) as (sim, connector):
        result = await connector.execute(za_call(amount_minor=500))
    assert (result["outcome"], result["reason"], result["carrier_code"]) == ("failed", "insufficient_funds", "POL1000")
    assert "insufficient" in result["carrier_message"]
    assert sim.ledger.charged_total() == 0


async def test_refund_and_balance():
    async with parlayx(balance=2000) as (sim, connector):
        assert (await connector.execute(za_call(amount_minor=700)))["outcome"] == "succeeded"
        refund = await connector.execute(za_call("refund", amount_minor=700))
        balance = await connector.execute(za_call("balance", amount_minor=None))
    assert refund["outcome"] == "succeeded"
    assert sim.ledger.refunded_total(MSISDN) == 700
    assert (balance["outcome"], balance["balance_minor"]) == ("succeeded", 2000)


async def test_throttle_fault_is_throttled():
    async with parlayx() as (sim, connector):
        sim.faults.inject("throttle")
        result = await connector.execute(za_call())
    assert (result["outcome"], result["reason"], result["carrier_code"]) == ("failed", "throttled", "SVC1000")
    assert sim.ledger.charged_total() == 0


async def test_timeout_after_charge_then_status_settles_it_and_a_repeat_is_not_charged_twice():
    async with parlayx(balance=2000, charge_timeout_s=0.3) as (sim, connector):
        sim.faults.inject("timeout_after_charge", operation="charge")
        charge = za_call()
        first = await connector.execute(charge)
        status = await connector.execute(status_call(charge))
        repeat = await connector.execute({**charge, "attempt": 2})
    assert (first["outcome"], first["reason"]) == ("unknown", "unknown")
    assert status["outcome"] == "succeeded"
    assert status["carrier_ref"] == sim.ledger.charges()[0].txid
    assert status["amount_minor"] == 500
    assert repeat["outcome"] == "succeeded"
    assert len(sim.ledger.charges(correlator=charge["correlator"])) == 1
    assert sim.ledger.charged_total() == 500


async def test_status_reports_a_failed_original_as_failed_with_its_reason():
    async with parlayx(balance=10) as (_, connector):
        charge = za_call(amount_minor=500)
        assert (await connector.execute(charge))["reason"] == "insufficient_funds"
        status = await connector.execute(status_call(charge))
        never = await connector.execute(status_call(za_call()))
    assert (status["outcome"], status["reason"]) == ("failed", "insufficient_funds")
    assert (never["outcome"], never["carrier_code"]) == ("failed", "SVC0270")


@pytest.mark.parametrize("fault", ["garbage", "html_error", "wrong_content_type"])
async def test_unreadable_soap_answers_are_unknown(fault):
    async with parlayx() as (sim, connector):
        sim.faults.inject(fault)
        result = await connector.execute(za_call())
    assert result["outcome"] == "unknown"


async def test_password_and_digest_never_logged():
    async with parlayx() as (sim, connector):
        results = [await connector.execute(za_call()), await connector.execute(za_call("balance"))]
    body = results[0]["request"]["body"]
    assert "<v2:spPassword>***</v2:spPassword>" in body
    digest = sim.received[0]["body"].split("spPassword>")[1].split("<")[0]
    assert_no_secrets(results, PARLAYX_ZA_SECRETS["PARLAYX_ZA_SP_PASSWORD"], digest)
