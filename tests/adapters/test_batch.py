"""The batch operator (accept now, CSV/XML result file later) end to end over real sockets."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from carrier_kit import BATCH_IN_SECRETS, assert_no_secrets, make_call, simulated_spec

from carrierpay.adapters.http import HttpConnector, fetch_report
from carrierpay.adapters.reports import ReportNotReady, ReportUnreadable, parse_report
from carrierpay.adapters.spec import load_spec
from carrierpay.simulators.batch import BatchSimulator

MSISDN = "+919876500001"
DAY = "2025-01-06"  # the simulated clock starts on 2025-01-06 09:00 UTC (14:30 in Kolkata)


def in_call(operation: str = "charge", **fields):
    return make_call(operation, **{"msisdn": MSISDN, "currency": "INR", "amount_minor": 2000, **fields})


@contextlib.asynccontextmanager
async def batch(balance: int = 10_000, *, charge_timeout_s: float | None = None):
    simulator = BatchSimulator(
        username=BATCH_IN_SECRETS["BATCH_IN_USERNAME"],
        password=BATCH_IN_SECRETS["BATCH_IN_PASSWORD"],
        report_delay=timedelta(hours=2),
        seed=5,
    )
    async with simulator:
        spec = simulated_spec(simulator, "batch_in", MSISDN, balance, charge_timeout_s)
        async with HttpConnector(spec, BATCH_IN_SECRETS) as connector:
            yield simulator, connector


async def test_charge_is_pending_until_the_report_says_succeeded():
    async with batch() as (sim, connector):
        call = in_call()
        accepted = await connector.execute(call)
        assert (accepted["outcome"], accepted["reason"]) == ("pending", None)
        with pytest.raises(ReportNotReady):
            await connector.fetch_report(date=DAY)
        sim.clock.advance(hours=2)
        rows = await connector.fetch_report(date=DAY)
    assert len(rows) == 1
    row = rows[0]
    assert (row["correlator"], row["outcome"], row["reason"]) == (call["correlator"], "succeeded", None)
    assert row["amount_minor"] == 2000 and row["carrier_ref"] == sim.ledger.charges()[0].txid
    assert sim.ledger.charged_total(MSISDN) == 2000


async def test_insufficient_funds_and_refund_in_the_report():
    async with batch(balance=3000) as (sim, connector):
        charge = in_call(amount_minor=2000)
        await connector.execute(charge)
        broke = in_call(amount_minor=2000)
        await connector.execute(broke)
        sim.clock.advance(hours=3)
        first = {row["correlator"]: row for row in await connector.fetch_report(date=DAY)}
        original = {"correlator": charge["correlator"], "carrier_ref": first[charge["correlator"]]["carrier_ref"]}
        refund = in_call("refund", amount_minor=2000, original=original)
        assert (await connector.execute(refund))["outcome"] == "pending"
        sim.clock.advance(hours=3)
        second = {row["correlator"]: row for row in await connector.fetch_report(date=DAY)}
    assert first[charge["correlator"]]["outcome"] == "succeeded"
    assert (first[broke["correlator"]]["outcome"], first[broke["correlator"]]["reason"]) == (
        "failed",
        "insufficient_funds",
    )
    assert first[broke["correlator"]]["carrier_code"] == "E101"
    assert second[refund["correlator"]]["outcome"] == "succeeded"
    assert second[refund["correlator"]]["fields"]["operation"] == "REFUND"
    assert sim.ledger.charged_total() == 2000 and sim.ledger.refunded_total() == 2000


async def test_balance_and_throttle():
    async with batch(balance=4321) as (sim, connector):
        balance = await connector.execute(in_call("balance"))
        sim.faults.inject("throttle")
        throttled = await connector.execute(in_call())
    assert (balance["outcome"], balance["balance_minor"]) == ("succeeded", 4321)
    assert (throttled["outcome"], throttled["reason"]) == ("failed", "throttled")
    assert sim.ledger.charged_total() == 0


async def test_lost_acceptance_is_unknown_the_report_settles_it_and_a_repeat_is_not_charged_twice():
    async with batch(charge_timeout_s=0.3) as (sim, connector):
        sim.faults.inject("timeout_after_charge", operation="charge")
        call = in_call()
        first = await connector.execute(call)
        repeat = await connector.execute({**call, "attempt": 2})
        sim.clock.advance(hours=2)
        rows = await fetch_report(connector.spec, BATCH_IN_SECRETS, base_url=sim.url, date=DAY)
    assert (first["outcome"], first["reason"]) == ("unknown", "unknown")
    assert repeat["outcome"] == "pending"
    assert [(row["correlator"], row["outcome"]) for row in rows] == [(call["correlator"], "succeeded")]
    assert len(sim.ledger.charges(correlator=call["correlator"])) == 1
    assert sim.ledger.charged_total() == 2000


async def test_xml_report_variant_from_spec_alone():
    async with batch() as (sim, connector):
        spec = connector.spec
        spec.data["reports"] = {
            "request": {"method": "GET", "path": "/reports/{{ date }}.xml"},
            "format": "xml",
            "record_xpath": "/report/record",
            "columns": {"correlator": "txn_id", "status": "status", "code": "result_code", "amount": "amount",
                        "carrier_ref": "carrier_txn_id"},
            "results": [{"when": {"status": "SUCCESS"}, "outcome": "succeeded"}],
        }  # fmt: skip
        call = in_call()
        await connector.execute(call)
        sim.clock.advance(days=1)
        rows = await connector.fetch_report(date=DAY)
    assert [(row["correlator"], row["outcome"], row["amount_minor"]) for row in rows] == [
        (call["correlator"], "succeeded", 2000)
    ]


def test_a_report_missing_its_columns_is_unreadable():
    spec = load_spec("batch_in")
    with pytest.raises(ReportUnreadable, match="lacks columns"):
        parse_report(spec, b"<html>maintenance</html>")


async def test_basic_credentials_never_logged():
    async with batch() as (_, connector):
        results = [await connector.execute(in_call()), await connector.execute(in_call("balance"))]
    assert results[0]["request"]["headers"]["Authorization"] == "***"
    assert_no_secrets(results, *BATCH_IN_SECRETS.values())
