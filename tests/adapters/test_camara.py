"""A CAMARA Carrier Billing operator: we authenticate to it with OAuth2, and hand it, in each payment,
the bearer credential it must present on its notification (`sinkCredential`), which our callback
check demands. Spec, connector and callback verification against the simulator, real sockets."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from carrier_kit import CallbackSink, assert_no_secrets, make_call

from carrierpay.adapters.callbacks import CallbackRejected, verify_and_parse_callback
from carrierpay.adapters.http import HttpConnector
from carrierpay.adapters.spec import load_spec, validate_spec
from carrierpay.simulators.base import exact_json
from carrierpay.simulators.camara import CamaraSimulator

SPEC = Path(__file__).with_name("camara_es.yaml")
MSISDN = "+34600990001"
SECRETS = {"CAMARA_ES_CLIENT_ID": "carrierpay", "CAMARA_ES_CLIENT_SECRET": "camara-client-secret-91",
           "CAMARA_ES_SINK_TOKEN": "sink-token-5c1e77a0b2"}


def es_call(**fields):
    return make_call("charge", **{"msisdn": MSISDN, "currency": "EUR", "amount_minor": 199, **fields})


async def test_the_sink_credential_rides_in_the_payment_and_authenticates_its_notification():
    async with CamaraSimulator(client_secret=SECRETS["CAMARA_ES_CLIENT_SECRET"], seed=3) as sim:
        sim.add_subscriber(MSISDN, 1000)
        spec = load_spec(SPEC, base_url=sim.url)
        async with CallbackSink(spec, SECRETS) as sink:
            async with HttpConnector(spec, SECRETS, callback_url=sink.url) as connector:
                call = es_call()
                result = await connector.execute(call)
            assert (result["outcome"], result["carrier_ref"]) == ("pending", sim.ledger.charges()[0].txid)
            sent = sim.received[-1]["body"]
            assert '"amount":1.99,' in sent  # a JSON number, as CAMARA's schema has it
            settled = await sink.wait_for(call["correlator"])
    assert (settled["outcome"], settled["amount_minor"], settled["currency"]) == ("succeeded", 199, "EUR")
    assert sim.notifications_sent[0]["headers"]["Authorization"] == f"Bearer {SECRETS['CAMARA_ES_SINK_TOKEN']}"
    assert sink.rejections == []
    assert sim.ledger.charged_total(MSISDN) == 199
    assert_no_secrets([result], SECRETS["CAMARA_ES_SINK_TOKEN"], SECRETS["CAMARA_ES_CLIENT_SECRET"])


async def test_a_notification_without_the_credential_we_handed_out_is_refused():
    async with CamaraSimulator(client_secret=SECRETS["CAMARA_ES_CLIENT_SECRET"], seed=3) as sim:
        sim.add_subscriber(MSISDN, 1000)
        spec = load_spec(SPEC, base_url=sim.url)
        result = sim.billing.charge("cp-forged", MSISDN, 199)
        raw = exact_json(sim.cloud_event(result)).encode()
    for headers in ({}, {"Authorization": "Bearer guessed-token-000"}, {"Authorization": "Basic eDp5"}):
        with pytest.raises(CallbackRejected):
            verify_and_parse_callback(spec, "POST", headers, {}, raw, "127.0.0.1", secrets=SECRETS)
    good = {"Authorization": f"Bearer {SECRETS['CAMARA_ES_SINK_TOKEN']}"}
    assert verify_and_parse_callback(spec, "POST", good, {}, raw, "127.0.0.1", secrets=SECRETS)["outcome"] == \
        "succeeded"


def test_a_credential_handed_to_the_carrier_must_be_checked_on_its_callbacks():
    data = load_spec(SPEC).data
    assert validate_spec(data) == []
    unchecked = copy.deepcopy(data)
    unchecked["callbacks"]["auth"] = [{"type": "basic", "username": "op", "password": {"secret": "OTHER"}}]
    assert any(e.startswith("credentials.sink: callbacks.auth must check it") for e in validate_spec(unchecked))
    no_callbacks = copy.deepcopy(data)
    del no_callbacks["callbacks"]
    no_callbacks["operations"]["charge"]["pattern"] = "sync"
    assert any(e.startswith("credentials.sink: a credential handed") for e in validate_spec(no_callbacks))
    literal = copy.deepcopy(data)
    literal["credentials"]["sink"] = "sink-token-in-the-file"
    assert any(e.startswith("credentials.sink") for e in validate_spec(literal))
