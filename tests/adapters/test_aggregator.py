"""The aggregator (form + HMAC requests, signed form callbacks) end to end over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from urllib.parse import urlencode

import pytest
from carrier_kit import AGGREGATOR_NG_SECRETS, CallbackSink, assert_no_secrets, make_call, simulated_spec, status_call

from carrierpay.adapters.callbacks import CallbackRejected, verify_and_parse_callback
from carrierpay.adapters.http import HttpConnector
from carrierpay.adapters.spec import load_spec
from carrierpay.simulators.aggregator import AggregatorSimulator

MSISDN = "+2348035550101"


def ng_call(operation: str = "charge", **fields):
    return make_call(operation, **{"msisdn": MSISDN, "currency": "NGN", "amount_minor": 10_000, **fields})


@contextlib.asynccontextmanager
async def aggregator(balance: int = 50_000, *, refuse_first: int = 0, charge_timeout_s: float | None = None):
    simulator = AggregatorSimulator(
        api_key=AGGREGATOR_NG_SECRETS["AGGREGATOR_NG_API_KEY"],
        api_secret=AGGREGATOR_NG_SECRETS["AGGREGATOR_NG_API_SECRET"],
        callback_secret=AGGREGATOR_NG_SECRETS["AGGREGATOR_NG_CALLBACK_SECRET"],
        seed=11,
    )
    async with simulator:
        spec = simulated_spec(simulator, "aggregator_ng", MSISDN, balance, charge_timeout_s)
        async with CallbackSink(spec, AGGREGATOR_NG_SECRETS, refuse_first=refuse_first) as sink:
            async with HttpConnector(spec, AGGREGATOR_NG_SECRETS, callback_url=sink.url) as connector:
                yield simulator, connector, sink


async def test_charge_is_pending_then_the_signed_callback_settles_it():
    async with aggregator() as (sim, connector, sink):
        call = ng_call()
        result = await connector.execute(call)
        assert (result["outcome"], result["reason"]) == ("pending", None)
        assert result["carrier_ref"] == sim.ledger.charges()[0].txid
        settled = await sink.wait_for(call["correlator"])
    assert settled["outcome"] == "succeeded"
    assert settled["carrier_ref"] == result["carrier_ref"]
    assert settled["amount_minor"] == 10_000 and settled["currency"] == "NGN"
    assert sim.ledger.charged_total(MSISDN) == 10_000
    assert result["request"]["body"]["amount"] == "100.00"
    assert result["request"]["body"]["callback_url"] == sink.url


async def test_insufficient_funds_arrives_as_a_failed_callback():
    async with aggregator(balance=500) as (sim, connector, sink):
        call = ng_call()
        assert (await connector.execute(call))["outcome"] == "pending"
        settled = await sink.wait_for(call["correlator"])
    assert (settled["outcome"], settled["reason"], settled["carrier_code"]) == (
        "failed",
        "insufficient_funds",
        "NO_FUNDS",
    )
    assert sim.ledger.charged_total() == 0


async def test_refund_balance_and_pin_optin():
    async with aggregator(balance=50_000) as (sim, connector, sink):
        charge = ng_call()
        charged = await connector.execute(charge)
        await sink.wait_for(charge["correlator"])
        original = {"correlator": charge["correlator"], "carrier_ref": charged["carrier_ref"], "amount_minor": 10_000}
        refund = await connector.execute(ng_call("refund", original=original))
        balance = await connector.execute(ng_call("balance"))
        sent = await connector.execute(ng_call("optin_send_pin"))
        pin = sim.pins[sent["carrier_ref"]]
        wrong_pin = "0000" if pin != "0000" else "1111"
        pin_ref = {"carrier_ref": sent["carrier_ref"]}
        refused = await connector.execute(ng_call("optin_verify", pin=wrong_pin, original=pin_ref))
        verified = await connector.execute(ng_call("optin_verify", pin=pin, original=pin_ref))
    assert refund["outcome"] == "succeeded" and sim.ledger.refunded_total(MSISDN) == 10_000
    assert (balance["outcome"], balance["balance_minor"]) == ("succeeded", 50_000)
    assert (refused["outcome"], refused["reason"]) == ("failed", "consent_refused")
    assert verified["outcome"] == "succeeded"
    assert verified["request"]["body"]["pin"] == "***"
    assert_no_secrets([verified], pin)


async def test_tps_exceeded_is_throttled():
    async with aggregator() as (sim, connector, _):
        sim.faults.inject("throttle")
        result = await connector.execute(ng_call())
    assert (result["outcome"], result["reason"], result["carrier_code"]) == ("failed", "throttled", "TPS_EXCEEDED")
    assert sim.ledger.charged_total() == 0


async def test_dropped_connection_after_charge_is_unknown_then_the_callback_settles_it_once():
    async with aggregator(charge_timeout_s=0.3) as (sim, connector, sink):
        sim.faults.inject("drop_after_charge", operation="charge")
        call = ng_call()
        first = await connector.execute(call)
        settled = await sink.wait_for(call["correlator"])
        repeat = await connector.execute({**call, "attempt": 2})
    assert (first["outcome"], first["reason"]) == ("unknown", "unknown")
    assert settled["outcome"] == "succeeded"
    assert repeat["outcome"] == "pending" and repeat["carrier_ref"] == settled["carrier_ref"]
    assert len(sim.ledger.charges(correlator=call["correlator"])) == 1


async def test_duplicate_early_and_retried_callbacks_parse_to_the_same_result():
    async with aggregator(refuse_first=2) as (sim, connector, sink):
        sim.callback_duplicates = 2
        sim.callback_before_response = True  # the callback lands before the charge answer does
        call = ng_call()
        result = await connector.execute(call)
        assert call["correlator"] in sink.settled  # already there when execute returned
        await sim.send_late_callback(call["correlator"])
    statuses = [delivery["status"] for delivery in sim.callbacks_sent]
    assert statuses[:3] == [500, 500, 200]  # retried until 200
    assert len(sink.deliveries) == 4  # first success + 2 duplicates + 1 late
    assert all(d == sink.deliveries[0] for d in sink.deliveries)
    assert sink.settled[call["correlator"]]["carrier_ref"] == result["carrier_ref"]
    assert sim.ledger.charged_total() == 10_000


async def test_forged_or_tampered_callbacks_are_rejected():
    spec = load_spec("aggregator_ng")
    sim = AggregatorSimulator(callback_secret=AGGREGATOR_NG_SECRETS["AGGREGATOR_NG_CALLBACK_SECRET"])
    sim.add_subscriber(MSISDN, 50_000)
    fields = sim.callback_fields(sim.billing.charge("cp-x", MSISDN, 10_000))
    body = urlencode(fields)
    ok = verify_and_parse_callback(spec, "POST", {}, {}, body, "127.0.0.1", secrets=AGGREGATOR_NG_SECRETS)
    assert (ok["correlator"], ok["outcome"]) == ("cp-x", "succeeded")

    tampered = body.replace("price=100.00", "price=1.00")
    with pytest.raises(CallbackRejected, match="signature"):
        verify_and_parse_callback(spec, "POST", {}, {}, tampered, "127.0.0.1", secrets=AGGREGATOR_NG_SECRETS)
    unsigned = urlencode({k: v for k, v in fields.items() if k != "sig"})
    with pytest.raises(CallbackRejected, match="not signed"):
        verify_and_parse_callback(spec, "POST", {}, {}, unsigned, "127.0.0.1", secrets=AGGREGATOR_NG_SECRETS)
    forged_sig = hashlib.md5(b"anything").hexdigest()
    forged = body.replace(fields["sig"], forged_sig)
    with pytest.raises(CallbackRejected):
        verify_and_parse_callback(spec, "POST", {}, {}, forged, "127.0.0.1", secrets=AGGREGATOR_NG_SECRETS)

    spec.data["callbacks"]["auth"].append({"type": "ip_allow_list", "cidrs": ["203.0.113.0/24"]})
    with pytest.raises(CallbackRejected, match="allow-list"):
        verify_and_parse_callback(spec, "POST", {}, {}, body, "198.51.100.7", secrets=AGGREGATOR_NG_SECRETS)
    assert verify_and_parse_callback(spec, "POST", {}, {}, body, "203.0.113.9", secrets=AGGREGATOR_NG_SECRETS)


async def test_callback_server_answers_403_to_a_bad_signature_and_the_aggregator_keeps_retrying():
    async with aggregator() as (sim, connector, sink):
        sim.callback_secret = "a-secret-we-do-not-share"
        sim.callback_attempts = 3
        call = ng_call()
        await connector.execute(call)
        for _ in range(200):
            if len(sim.callbacks_sent) >= 3:
                break
            await asyncio.sleep(0.01)
    assert [d["status"] for d in sim.callbacks_sent] == [403, 403, 403]
    assert sink.settled == {} and len(sink.rejections) == 3


async def test_status_lookup_and_bad_request_signature():
    async with aggregator() as (sim, connector, sink):
        call = ng_call()
        await connector.execute(call)
        await sink.wait_for(call["correlator"])
        status = await connector.execute(status_call(call))
        never = await connector.execute(status_call(ng_call()))
        connector.secrets = type(connector.secrets)({**AGGREGATOR_NG_SECRETS, "AGGREGATOR_NG_API_SECRET": "wrong"})
        connector.auth.secrets = connector.secrets
        forged = await connector.execute(ng_call())
    assert (status["outcome"], status["amount_minor"]) == ("succeeded", 10_000)
    assert (never["outcome"], never["reason"]) == ("failed", "rejected")
    assert (forged["outcome"], forged["carrier_code"]) == ("failed", "INVALID_SIGNATURE")
    assert sim.rejected_signatures == 1


async def test_signing_secrets_never_logged():
    async with aggregator() as (sim, connector, sink):
        results = [await connector.execute(ng_call()), await connector.execute(ng_call("balance"))]
    assert results[0]["request"]["headers"]["X-Signature"] == "***"
    assert results[0]["request"]["headers"]["X-API-Key"] == "***"
    # Each request's own signature is masked wherever it appears, not only under its header name.
    signatures = [request["headers"]["X-Signature"] for request in sim.received]
    assert len(set(signatures)) == 2
    assert_no_secrets(results, *AGGREGATOR_NG_SECRETS.values(), *signatures)
    # Per-request values are not hoarded by the connector for the rest of its life.
    assert not set(signatures) & set(connector.auth.revealed)
