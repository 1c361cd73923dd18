"""The OneAPI (REST/JSON, OAuth2) carrier end to end: connector + oneapi_gb spec + simulator, real sockets."""

from __future__ import annotations

import contextlib

import pytest
from carrier_kit import ONEAPI_GB_SECRETS, assert_no_secrets, make_call, simulated_spec, status_call

from carrierpay.adapters.http import HttpConnector
from carrierpay.adapters.spec import load_spec
from carrierpay.simulators.oneapi import OneApiFlavor, OneApiSimulator

MSISDN = "+447700900123"


@contextlib.asynccontextmanager
async def oneapi(balance: int = 1000, *, charge_timeout_s: float | None = None, flavor: OneApiFlavor | None = None):
    simulator = OneApiSimulator(
        client_id=ONEAPI_GB_SECRETS["ONEAPI_GB_CLIENT_ID"],
        client_secret=ONEAPI_GB_SECRETS["ONEAPI_GB_CLIENT_SECRET"],
        seed=7,
        flavor=flavor,
    )
    async with simulator:
        spec = simulated_spec(simulator, "oneapi_gb", MSISDN, balance, charge_timeout_s)
        async with HttpConnector(spec, ONEAPI_GB_SECRETS) as connector:
            yield simulator, connector


async def test_charge_succeeds_and_the_carrier_ledger_shows_it():
    async with oneapi(balance=1000) as (sim, connector):
        call = make_call()
        result = await connector.execute(call)
    assert result["call_id"] == call["call_id"]
    assert (result["outcome"], result["reason"]) == ("succeeded", None)
    assert result["carrier_ref"] == sim.ledger.charges()[0].txid
    assert result["amount_minor"] == 150
    assert result["latency_ms"] >= 0
    assert sim.ledger.charged_total(MSISDN) == 150
    assert sim.balance(MSISDN) == 850
    sent = result["request"]["body"]["amountTransaction"]
    assert sent["clientCorrelator"] == call["correlator"]
    assert sent["paymentAmount"]["chargingInformation"]["amount"] == "1.50"


async def test_insufficient_funds_is_a_definite_failure_and_nothing_is_charged():
    async with oneapi(balance=100) as (sim, connector):
        result = await connector.execute(make_call(amount_minor=150))
    assert (result["outcome"], result["reason"], result["carrier_code"]) == ("failed", "insufficient_funds", "POL1000")
    assert result["carrier_message"]
    assert sim.ledger.charged_total() == 0


@pytest.mark.parametrize(
    ("state", "reason", "code"),
    [("barred", "barred", "POL2003"), ("unknown", "subscriber_invalid", "SVC0004")],
)
async def test_subscriber_problems_map_to_stop_reasons(state, reason, code):
    async with oneapi() as (sim, connector):
        sim.add_subscriber("+447700900999", 5000, state=state)
        result = await connector.execute(make_call(msisdn="+447700900999"))
    assert (result["outcome"], result["reason"], result["carrier_code"]) == ("failed", reason, code)


async def test_refund_of_a_charge():
    async with oneapi(balance=1000) as (sim, connector):
        charge = make_call(amount_minor=300)
        charged = await connector.execute(charge)
        refund = make_call(
            "refund",
            amount_minor=300,
            original={"correlator": charge["correlator"], "carrier_ref": charged["carrier_ref"], "amount_minor": 300},
        )
        refunded = await connector.execute(refund)
        again = await connector.execute({**refund, "call_id": refund["call_id"] + 10_000, "correlator": "cp-new"})
    assert refunded["outcome"] == "succeeded"
    assert sim.ledger.refunded_total(MSISDN) == 300
    assert sim.balance(MSISDN) == 1000
    assert (again["outcome"], again["reason"]) == ("failed", "limit_exceeded")  # cannot refund twice


async def test_balance_check():
    async with oneapi(balance=1234) as (_, connector):
        result = await connector.execute(make_call("balance", amount_minor=None))
    assert (result["outcome"], result["balance_minor"]) == ("succeeded", 1234)


async def test_throttled_request_is_failed_throttled_and_not_charged():
    async with oneapi() as (sim, connector):
        sim.faults.inject("throttle", operation="charge")
        result = await connector.execute(make_call())
    assert (result["outcome"], result["reason"], result["carrier_code"]) == ("failed", "throttled", "SVC1000")
    assert sim.ledger.charged_total() == 0


async def test_carrier_tps_budget_throttles_a_burst():
    async with oneapi(balance=100_000) as (sim, connector):
        sim.faults.tps_limit, sim.faults.tps_window_s = 2, 3600  # one long window: no dependence on timing
        import asyncio

        results = await asyncio.gather(*(connector.execute(make_call()) for _ in range(5)))
    outcomes = sorted((r["outcome"], r["reason"]) for r in results)
    assert outcomes == [("failed", "throttled")] * 3 + [("succeeded", None)] * 2
    assert sim.ledger.charged_total() == 300


@pytest.mark.parametrize("fault", ["timeout_after_charge", "drop_after_charge"])
async def test_lost_answer_after_charging_is_unknown_then_settled_by_status_without_double_charge(fault):
    async with oneapi(balance=1000, charge_timeout_s=0.3) as (sim, connector):
        sim.faults.inject(fault, operation="charge")
        charge = make_call()
        first = await connector.execute(charge)
        assert (first["outcome"], first["reason"]) == ("unknown", "unknown")
        assert sim.ledger.charged_total() == 150  # the carrier did charge

        status = await connector.execute(status_call(charge))
        assert status["outcome"] == "succeeded"
        assert status["carrier_ref"] == sim.ledger.charges()[0].txid

        # A repeat of the same attempt reuses the correlator; the carrier recognises it.
        repeat = await connector.execute({**charge, "attempt": 2})
    assert repeat["outcome"] == "succeeded"
    assert repeat["carrier_ref"] == status["carrier_ref"]
    assert len(sim.ledger.charges(correlator=charge["correlator"])) == 1
    assert sim.ledger.charged_total() == 150


async def test_status_of_a_charge_the_carrier_never_saw_is_a_definite_failure():
    async with oneapi() as (_, connector):
        result = await connector.execute(status_call(make_call()))
    assert (result["outcome"], result["reason"], result["carrier_code"]) == ("failed", "rejected", "SVC0270")


@pytest.mark.parametrize("fault", ["garbage", "html_error", "wrong_content_type"])
async def test_unreadable_answers_are_unknown_never_success(fault):
    async with oneapi() as (sim, connector):
        sim.faults.inject(fault, operation="charge")
        result = await connector.execute(make_call())
    assert (result["outcome"], result["reason"]) == ("unknown", "unknown")
    assert "unreadable" in result["carrier_message"]


async def test_connection_refused_before_sending_is_unreachable_nothing_sent():
    async with oneapi() as (sim, _):
        url = sim.url
    spec = load_spec("oneapi_gb", base_url=url)
    spec.data["auth"] = {"type": "none"}  # reach the charge request itself, not the token endpoint
    async with HttpConnector(spec, ONEAPI_GB_SECRETS) as connector:
        result = await connector.execute(make_call())
    assert (result["outcome"], result["reason"]) == ("failed", "unreachable")
    assert result["carrier_message"].startswith("not sent, could not connect: ClientConnectorError")


async def test_token_endpoint_down_means_nothing_was_sent():
    async with oneapi() as (sim, _):
        url = sim.url
    async with HttpConnector(load_spec("oneapi_gb", base_url=url), ONEAPI_GB_SECRETS) as connector:
        result = await connector.execute(make_call())
    assert (result["outcome"], result["reason"]) == ("failed", "unreachable")
    assert "token endpoint" in result["carrier_message"]


async def test_token_endpoint_refusing_our_credentials_is_transient_not_unreachable():
    wrong = {**ONEAPI_GB_SECRETS, "ONEAPI_GB_CLIENT_SECRET": "not-the-secret"}
    async with oneapi() as (sim, _):
        async with HttpConnector(load_spec("oneapi_gb", base_url=sim.url), wrong) as connector:
            result = await connector.execute(make_call())
    assert (result["outcome"], result["reason"]) == ("failed", "transient")
    assert "token endpoint answered HTTP" in result["carrier_message"]
    assert sim.ledger.transactions == []


async def test_oauth_token_is_cached_and_refreshed_after_a_401():
    async with oneapi(balance=10_000) as (sim, connector):
        for _ in range(3):
            assert (await connector.execute(make_call()))["outcome"] == "succeeded"
        assert sim.tokens_issued == 1
        sim.revoke_tokens()
        assert (await connector.execute(make_call()))["outcome"] == "succeeded"
        assert sim.tokens_issued == 2
    assert sim.ledger.charged_total() == 600


async def test_a_short_lived_oauth_token_is_reused_not_fetched_per_call():
    # A carrier whose tokens live 30 s (a common fixed refresh margin): one token serves all three calls.
    async with oneapi(balance=10_000, flavor=OneApiFlavor(token_ttl_s=30)) as (sim, connector):
        for _ in range(3):
            assert (await connector.execute(make_call()))["outcome"] == "succeeded"
    assert sim.tokens_issued == 1
    assert len([r for r in sim.received if r["path"].endswith("/transactions/amount")]) == 3  # none refused


@pytest.mark.parametrize(("ttl_s", "margin_s", "renewed_after_s"),
                         [(30, None, 24), (3600, None, 2880), (10, None, 8), (200, 60, 140), (30, 60, 15)])
async def test_oauth_token_is_renewed_at_a_fraction_of_its_announced_lifetime(ttl_s, margin_s, renewed_after_s):
    """Renewed before the carrier's expiry, whatever lifetime it announces (`expires_in`), and not before
    the fraction of it has passed; a spec's margin renews earlier, never before half the lifetime."""
    async with oneapi(balance=10_000, flavor=OneApiFlavor(token_ttl_s=ttl_s)) as (sim, connector):
        if margin_s is not None:
            connector.auth.config["refresh_margin_s"] = margin_s
        now = [1000.0]
        connector.auth._clock = lambda: now[0]
        assert (await connector.execute(make_call()))["outcome"] == "succeeded"
        now[0] += renewed_after_s - 0.5
        assert (await connector.execute(make_call()))["outcome"] == "succeeded"
        assert sim.tokens_issued == 1
        now[0] += 1.0
        assert (await connector.execute(make_call()))["outcome"] == "succeeded"
        assert sim.tokens_issued == 2


async def test_operation_not_offered_is_rejected_without_traffic():
    async with oneapi() as (sim, connector):
        result = await connector.execute(make_call("optin_send_pin"))  # oneapi_gb offers no PIN API
    assert (result["outcome"], result["reason"]) == ("failed", "rejected")
    assert sim.received == []


async def test_secrets_and_tokens_never_appear_in_logged_traffic():
    async with oneapi(balance=10_000) as (sim, connector):
        results = [await connector.execute(make_call()) for _ in range(2)]
        results.append(await connector.execute(make_call("balance")))
        tokens = list(sim.tokens)
    assert tokens
    assert_no_secrets(results, *ONEAPI_GB_SECRETS.values(), *tokens)
    assert results[0]["request"]["headers"]["Authorization"] == "***"


@pytest.mark.parametrize("amount_minor", [199, 110, 9_007_199_254_740_993])
async def test_a_carrier_that_wants_amounts_as_json_numbers_gets_them_exactly(amount_minor):
    """`amount: {format: major_number}` writes 1.99 as a JSON number, digit for digit (1.10 stays 1.10, and
    2**53 + 1 minor units keep their last digit, which a float would lose), and reads the carrier's
    numeric answer back exactly. That operator refuses an amount sent as a string."""
    flavor = OneApiFlavor(amount_json="number")
    async with oneapi(balance=10**17, flavor=flavor) as (sim, connector):
        connector.spec.data["amount"] = {"format": "major_number", "exponent": 2}
        result = await connector.execute(make_call(amount_minor=amount_minor))
    major = f"{amount_minor // 100}.{amount_minor % 100:02d}"
    assert f'"amount":{major},' in sim.received[-1]["body"]
    assert (result["outcome"], result["amount_minor"]) == ("succeeded", amount_minor)
    assert sim.ledger.charged_total(MSISDN) == amount_minor


async def test_an_amount_sent_as_a_string_to_a_carrier_that_wants_a_number_is_refused():
    async with oneapi(balance=10_000, flavor=OneApiFlavor(amount_json="number")) as (sim, connector):
        result = await connector.execute(make_call(amount_minor=199))  # the spec still says major_decimal
    assert (result["outcome"], result["reason"]) == ("failed", "rejected")
    assert sim.ledger.charged_total() == 0
