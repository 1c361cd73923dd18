"""A fifth carrier built purely from a spec file, against the OneAPI simulator bent by configuration."""

from __future__ import annotations

from pathlib import Path

from carrier_kit import assert_no_secrets, make_call

from carrierpay.adapters.http import HttpConnector
from carrierpay.adapters.spec import load_spec, validate_spec
from carrierpay.simulators.oneapi import OneApiFlavor, OneApiSimulator

SPEC = Path(__file__).with_name("fifth_carrier.yaml")
MSISDN = "+254711500001"
KEY = "ke-operator-key-4d2f"
KENYAN_CODES = {
    "insufficient_funds": ("KE-402", "Balance too low"),
    "barred": ("KE-403", "Line is barred"),
    "limit_exceeded": ("KE-409", "Daily limit reached"),
    "consent_refused": ("KE-451", "No consent"),
    "unknown_subscriber": ("KE-404", "Unknown line"),
    "invalid": ("KE-400", "Bad request"),
    "throttled": ("KE-429", "Slow down"),
    "transient": ("KE-503", "Try later"),
    "not_found": ("KE-410", "No such transaction"),
}


def ke_call(operation="charge", **fields):
    return make_call(operation, **{"msisdn": MSISDN, "currency": "KES", "amount_minor": 5000, **fields})


def simulator() -> OneApiSimulator:
    flavor = OneApiFlavor(
        prefix="/billing/v3", auth="api_key", api_key_header="X-Operator-Key", response_format="xml", codes=KENYAN_CODES
    )
    return OneApiSimulator(api_key=KEY, flavor=flavor, currency="KES", timezone="Africa/Nairobi", seed=2)


async def test_fifth_carrier_reserve_then_capture_from_spec_alone():
    async with simulator() as sim:
        sim.add_subscriber(MSISDN, 8000)
        sim.add_subscriber("+254711500002", 8000, state="barred")
        spec = load_spec(SPEC, base_url=sim.url)
        async with HttpConnector(spec, {"RESERVE_KE_KEY": KEY}) as connector:
            charged = await connector.execute(ke_call())
            broke = await connector.execute(ke_call())  # 3000 left: the reservation is refused
            barred = await connector.execute(ke_call(msisdn="+254711500002"))
            balance = await connector.execute(ke_call("balance"))
            sim.faults.inject("throttle", operation="capture")
            throttled = await connector.execute(ke_call(amount_minor=100))
    assert (charged["outcome"], charged["amount_minor"]) == ("succeeded", 5000)
    assert charged["carrier_ref"] == sim.ledger.charges()[0].txid
    assert [step["status"] for step in charged["response"]["steps"]] == [201, 201]
    assert (broke["outcome"], broke["reason"], broke["carrier_code"]) == ("failed", "insufficient_funds", "KE-402")
    assert len(broke["request"]["steps"]) == 1  # a refused reservation stops before capture
    assert (barred["outcome"], barred["reason"]) == ("failed", "barred")
    assert (throttled["outcome"], throttled["reason"]) == ("failed", "throttled")
    assert sim.ledger.charged_total(MSISDN) == 5000
    # balance was asked before the throttled attempt: 8000 - 5000 charged
    assert (balance["outcome"], balance["balance_minor"]) == ("succeeded", 3000)
    assert_no_secrets([charged, broke, balance], KEY)
    assert charged["request"]["steps"][0]["headers"]["X-Operator-Key"] == "***"


async def test_a_reservation_is_named_in_the_result_and_never_cancelled_by_the_connector():
    """Two-step charging: a capture refused for good leaves the reservation held; the result names it, so the
    database queues the one release (tests/daemons/test_reservations.py). The connector sends no cancel of its
    own: one sent here and lost with a dying daemon could not be told from one never sent."""
    async with simulator() as sim:
        sim.add_subscriber(MSISDN, 8000)
        spec = load_spec(SPEC, base_url=sim.url)
        async with HttpConnector(spec, {"RESERVE_KE_KEY": KEY}) as connector:
            sim.faults.inject("deny", operation="capture")
            denied = await connector.execute(ke_call(amount_minor=3000))
            sim.faults.inject("throttle", operation="capture")
            throttled = await connector.execute(ke_call(correlator="cp-2", amount_minor=3000))
            broke = await connector.execute(ke_call(correlator="cp-3"))  # 2000 left: refused
    reservations = [t for t in sim.ledger.transactions if t.kind == "reserve" and t.status == "succeeded"]
    assert (denied["outcome"], denied["reason"]) == ("failed", "rejected")
    assert [step["status"] for step in denied["response"]["steps"]] == [201, 400]  # reserve, capture: no release
    assert denied["reservation"] == {"carrier_ref": reservations[0].txid}
    assert (throttled["outcome"], throttled["reason"]) == ("failed", "throttled")
    assert throttled["reservation"] == {"carrier_ref": reservations[1].txid}
    assert "reservation" not in broke  # the reservation itself was refused: nothing is held
    assert sim.billing.held(MSISDN) == 6000
    sim.clock.advance(seconds=spec.data["operations"]["charge"]["two_step"]["expiry_s"])
    assert sim.billing.held(MSISDN) == 0 and sim.balance(MSISDN) == 8000  # what the carrier does by itself


def test_two_step_names_a_reservation_step_and_a_declared_cancel_operation():
    data = load_spec(SPEC).data
    data["operations"]["charge"]["two_step"]["reserve"] = "capture"  # the last step: nothing confirms it
    del data["operations"]["release"]
    problems = validate_spec(data)
    assert any(p.startswith("operations.charge.two_step.reserve") for p in problems)
    assert any(p.startswith("operations.charge.two_step.cancel") for p in problems)
    data["operations"]["charge"]["two_step"]["confirm_within_s"] = 900  # not before the carrier's expiry
    assert any(p.startswith("operations.charge.two_step.confirm_within_s") for p in validate_spec(data))
