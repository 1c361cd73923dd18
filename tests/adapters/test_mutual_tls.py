"""Mutual TLS towards carriers, over real sockets: the simulators serve HTTPS with a certificate from
a CA made for the test run and demand a client certificate from that CA; the connector's TLS
context comes from the spec's `tls` section alone (CA bundle relative to carrier.yaml, client
certificate and key named by secrets)."""

from __future__ import annotations

import contextlib
import shutil
import ssl

import pytest
import yaml
from carrier_kit import ONEAPI_GB_SECRETS, PARLAYX_ZA_SECRETS, make_call, status_call

from carrierpay.adapters.auth import TlsConfigError
from carrierpay.adapters.http import HttpConnector
from carrierpay.adapters.reconciler import NOT_DEFINITE
from carrierpay.adapters.spec import load_spec
from carrierpay.paths import carriers_root
from carrierpay.simulators.oneapi import OneApiSimulator
from carrierpay.simulators.parlayx import ParlayXSimulator

CLIENT = "carrierpay adapter"  # the client certificate's common name (tests/tls_kit.py)
CARRIERS = {
    # code: (simulator, secrets, subscriber, currency)
    "oneapi_gb": (lambda **tls: OneApiSimulator(client_id=ONEAPI_GB_SECRETS["ONEAPI_GB_CLIENT_ID"],
                                                client_secret=ONEAPI_GB_SECRETS["ONEAPI_GB_CLIENT_SECRET"], **tls),
                  ONEAPI_GB_SECRETS, "+447700900123", "GBP"),
    "parlayx_za": (lambda **tls: ParlayXSimulator(sp_id=PARLAYX_ZA_SECRETS["PARLAYX_ZA_SP_ID"],
                                                  sp_password=PARLAYX_ZA_SECRETS["PARLAYX_ZA_SP_PASSWORD"], **tls),
                   PARLAYX_ZA_SECRETS, "+27825550101", "ZAR"),
}


def spec_folder(tmp_path, code: str, tls: dict, ca_file) -> str:
    """A copy of carriers/<code>/carrier.yaml in its own folder with `tls` added; the CA bundle is
    copied to certs/carrier-ca.pem beside it, so the spec can name it relative to itself."""
    folder = tmp_path / code
    (folder / "certs").mkdir(parents=True)
    shutil.copy(ca_file, folder / "certs" / "carrier-ca.pem")
    document = yaml.safe_load((carriers_root() / code / "carrier.yaml").read_text())
    document["tls"] = tls
    (folder / "carrier.yaml").write_text(yaml.safe_dump(document))
    return str(folder / "carrier.yaml")


MUTUAL = {"ca_bundle": "certs/carrier-ca.pem",
          "client_cert": {"secret": "CARRIER_CLIENT_CERT"}, "client_key": {"secret": "CARRIER_CLIENT_KEY"}}
CA_ONLY = {"ca_bundle": "certs/carrier-ca.pem"}


@contextlib.asynccontextmanager
async def carrier(tmp_path, tls_files, code: str, tls: dict, *, ca_file=None, server_context=None):
    """The carrier's simulator behind HTTPS that requires a client certificate, and a connector built
    from a spec carrying `tls`."""
    make_simulator, secrets, number, _ = CARRIERS[code]
    simulator = make_simulator(ssl_context=server_context or tls_files.server_context(require_client_cert=True))
    secrets = {**secrets, "CARRIER_CLIENT_CERT": str(tls_files.client_cert),
               "CARRIER_CLIENT_KEY": str(tls_files.client_key)}
    async with simulator:
        simulator.add_subscriber(number, 100_000)
        spec = load_spec(spec_folder(tmp_path, code, tls, ca_file or tls_files.ca), base_url=simulator.url)
        async with HttpConnector(spec, secrets) as connector:
            yield simulator, connector


def charge(code: str, **fields) -> dict:
    _, _, number, currency = CARRIERS[code]
    return make_call(msisdn=number, currency=currency, amount_minor=500, **fields)


@pytest.mark.parametrize("code", list(CARRIERS))
async def test_a_charge_over_mutual_tls_succeeds_and_the_carrier_saw_our_certificate(tmp_path, tls_files, code):
    async with carrier(tmp_path, tls_files, code, MUTUAL) as (sim, connector):
        assert sim.url.startswith("https://127.0.0.1:")
        first, second = charge(code), charge(code)
        result = await connector.execute(first)
        again = await connector.execute(second)  # a second call, on the kept-alive connection
    assert (result["outcome"], result["reason"]) == ("succeeded", None)
    assert again["outcome"] == "succeeded"
    assert [t.correlator for t in sim.ledger.charges()] == [first["correlator"], second["correlator"]]
    assert sim.ledger.charged_total() == 1000
    assert sim.received and {request["client_cert"] for request in sim.received} == {CLIENT}


async def test_without_a_client_certificate_an_oauth_carrier_is_never_reached(tmp_path, tls_files):
    """OneAPI asks its token endpoint first: the TLS refusal happens there, so the charge itself is
    never sent: failed/unreachable (the same call is held and sent later), nothing received, nothing
    charged."""
    async with carrier(tmp_path, tls_files, "oneapi_gb", CA_ONLY) as (sim, connector):
        result = await connector.execute(charge("oneapi_gb"))
    assert (result["outcome"], result["reason"]) == ("failed", "unreachable")
    assert result["carrier_message"].startswith("request not sent: token endpoint unreachable")
    assert result["response"] is None
    assert sim.received == []
    assert sim.ledger.transactions == []


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_without_a_client_certificate_the_charge_endpoint_refuses_and_nothing_is_charged(
        tmp_path, tls_files, version):
    """ParlayX has no token step, so the charge request itself meets the refusal. TLS 1.2 refuses
    inside the handshake, before our request is written: failed/unreachable. TLS 1.3 finishes the
    client's side of the handshake first and resets the connection once it has checked our (missing)
    certificate, after our request was written: that is indistinguishable from a carrier dying
    mid-request, so it is unknown and reconciled, never re-sent. Either way the carrier processed
    nothing; once the certificate is back, the status query proves it and the charge settles failed."""
    server = tls_files.server_context(require_client_cert=True)
    server.maximum_version = version
    async with carrier(tmp_path, tls_files, "parlayx_za", CA_ONLY, server_context=server) as (sim, connector):
        call = charge("parlayx_za")
        result = await connector.execute(call)
        status_while_refused = await connector.execute(status_call(call))
        if version == ssl.TLSVersion.TLSv1_2:
            assert (result["outcome"], result["reason"]) == ("failed", "unreachable")
            assert result["carrier_message"].startswith("not sent, could not connect: ClientConnectorError")
            assert "TLS handshake was cut off" in result["carrier_message"]
        else:
            assert (result["outcome"], result["reason"]) == ("unknown", "unknown")
            assert "after sending" in result["carrier_message"]
        # The reconciler's status query meets the same refusal: not definite, the call waits its next turn.
        assert status_while_refused["outcome"] in ("failed", "unknown")
        assert status_while_refused["reason"] in ("unreachable", "unknown")
        assert sim.received == [] and sim.ledger.transactions == []

        spec = load_spec(spec_folder(tmp_path / "fixed", "parlayx_za", MUTUAL, tls_files.ca), base_url=sim.url)
        secrets = {**PARLAYX_ZA_SECRETS, "CARRIER_CLIENT_CERT": str(tls_files.client_cert),
                   "CARRIER_CLIENT_KEY": str(tls_files.client_key)}
        async with HttpConnector(spec, secrets) as fixed:
            status = await fixed.execute(status_call(call))
    assert status["outcome"] == "failed" and status["reason"] not in NOT_DEFINITE
    assert sim.ledger.charges() == []


@pytest.mark.parametrize("code", list(CARRIERS))
async def test_a_server_certificate_from_an_untrusted_ca_is_refused_before_sending(tmp_path, tls_files, code):
    """The CA bundle names a CA that did not sign the carrier's certificate: we refuse the handshake
    ourselves, before any request is written, so sending it later is safe (failed/unreachable)."""
    async with carrier(tmp_path, tls_files, code, MUTUAL, ca_file=tls_files.other_ca) as (sim, connector):
        result = await connector.execute(charge(code))
    assert (result["outcome"], result["reason"]) == ("failed", "unreachable")
    assert "ClientConnectorCertificateError" in result["carrier_message"]
    assert "certificate verify failed" in result["carrier_message"]
    assert sim.received == []
    assert sim.ledger.transactions == []


async def test_verify_false_still_presents_the_client_certificate(tmp_path, tls_files):
    """A sandbox whose server certificate we cannot check (`verify: false`) may still want ours."""
    tls = {**MUTUAL, "verify": False}
    async with carrier(tmp_path, tls_files, "parlayx_za", tls, ca_file=tls_files.other_ca) as (sim, connector):
        result = await connector.execute(charge("parlayx_za"))
    assert result["outcome"] == "succeeded"
    assert sim.ledger.charged_total() == 500
    assert {request["client_cert"] for request in sim.received} == {CLIENT}


@pytest.mark.parametrize(
    ("tls", "secrets", "named"),
    [
        ({"ca_bundle": "certs/missing.pem"}, {}, "tls.ca_bundle"),
        (MUTUAL, {"CARRIER_CLIENT_KEY": "ca"}, "tls.client_cert"),  # the key file is a certificate
        (MUTUAL, {"CARRIER_CLIENT_CERT": None}, "CARRIER_CLIENT_CERT"),  # the secret is not set
    ],
)
def test_an_unusable_tls_setup_is_a_configuration_error_when_the_connector_is_built(tmp_path, tls_files, tls,
                                                                                    secrets, named):
    """Not an outcome of some later call: the adapter daemon skips such a carrier with this message
    and its calls stay queued (nothing is attempted, nothing is failed)."""
    values = {"CARRIER_CLIENT_CERT": str(tls_files.client_cert), "CARRIER_CLIENT_KEY": str(tls_files.client_key)}
    values.update({key: str(tls_files.ca) if value == "ca" else value for key, value in secrets.items()})
    values = {key: value for key, value in values.items() if value is not None}
    spec = load_spec(spec_folder(tmp_path, "parlayx_za", tls, tls_files.ca), base_url="https://127.0.0.1:9")
    with pytest.raises(TlsConfigError, match=named):
        HttpConnector(spec, {**PARLAYX_ZA_SECRETS, **values})
