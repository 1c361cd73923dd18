"""Spec loading and validation: every shipped spec loads; every error names the bad field's path."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from carrierpay.adapters.secrets import MissingSecret, Secrets
from carrierpay.adapters.spec import SpecError, load_spec, validate_spec
from carrierpay.paths import carriers_root

SHIPPED = sorted(path.parent.name for path in carriers_root().glob("*/carrier.yaml"))


def base_spec() -> dict:
    return copy.deepcopy(load_spec("oneapi_gb").data)


def errors_for(mutate) -> list[str]:
    data = base_spec()
    mutate(data)
    return validate_spec(data)


def test_every_shipped_carrier_spec_is_valid():
    assert "oneapi_gb" in SHIPPED
    for code in SHIPPED:
        spec = load_spec(code)
        assert spec.code == code
        assert spec.data["currency"] and spec.tps > 0


def test_a_misspelt_http_method_names_its_path():
    errors = errors_for(lambda d: d["operations"]["charge"]["request"].update(method="PUTT"))
    assert errors == [
        "operations.charge.request.method: 'PUTT' is not one of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE']"
    ]


def test_load_spec_raises_with_every_error_listed(tmp_path):
    data = base_spec()
    data["currency"] = "pounds"
    data["operations"]["charge"]["pattern"] = "eventually"
    path = tmp_path / "carrier.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    assert str(path) in str(raised.value)
    assert any(e.startswith("currency: 'pounds' does not match") for e in raised.value.errors)
    assert any(e.startswith("operations.charge.pattern: 'eventually' is not one of") for e in raised.value.errors)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.pop("timezone"), "(top level): 'timezone' is a required property"),
        (lambda d: d.update(code="OneAPI-GB"), "code: 'OneAPI-GB' does not match"),
        (lambda d: d.update(mcc=234), "mcc: 234 is not of type 'string'"),
        (lambda d: d.update(number_ranges=["4477009"]), "number_ranges[0]: '4477009' does not match"),
        (lambda d: d["terms"].update(carrier_share_bp=12000), "terms.carrier_share_bp: 12000 is greater than"),
        (lambda d: d.update(charging_hours="8-22"), "charging_hours: '8-22' does not match"),
        (lambda d: d.update(colour="blue"), "(top level): 'colour' does not match any of the regexes"),
        (lambda d: d["operations"].update(teleport=d["operations"]["charge"]), "operations: 'teleport' is not one of"),
        (lambda d: d["operations"]["charge"].pop("safe_to_repeat"), "operations.charge: 'safe_to_repeat' is"),
        (
            lambda d: d["auth"].update(client_secret="plain-text-secret"),
            "auth.client_secret: 'plain-text-secret' is not of type 'object'",
        ),
        (
            lambda d: d["operations"]["charge"]["results"][0].update(outcome="maybe"),
            "operations.charge.results[0].outcome: 'maybe' is not one of",
        ),
        (
            lambda d: d["results"][0].update(reason="bad_luck"),
            "results[0].reason: 'bad_luck' is not one of",
        ),
        (
            lambda d: d["operations"]["charge"]["response"].update(format="yaml"),
            "operations.charge.response.format: 'yaml' is not one of",
        ),
        (lambda d: d.update(timezone="Europe/Atlantis"), "timezone: 'Europe/Atlantis' is not an IANA time zone"),
        (
            lambda d: d["operations"]["charge"]["request"].update(path="/pay/{{ msisdn "),
            "operations.charge.request.path: template error",
        ),
        (
            lambda d: d["operations"]["balance"]["response"]["extract"].update(balance="$..[?("),
            "operations.balance.response.extract.balance: invalid JSONPath",
        ),
        (
            lambda d: d["results"].append({"when": {"message": {"regex": "(unclosed"}}, "outcome": "failed"}),
            "results[9].when.message.regex:",
        ),
        (
            lambda d: d["operations"]["charge"].update(pattern="callback"),
            "operations.charge.pattern: 'callback' needs a top-level 'callbacks' section",
        ),
        (
            lambda d: d["operations"]["charge"]["results"].append(
                {"when": {"http_status": 200, "match_unparsed": True}, "outcome": "succeeded"}
            ),
            "operations.charge.results[1].when.match_unparsed: an unreadable answer can never mean success",
        ),
    ],
)
def test_invalid_specs_name_the_offending_path(mutate, expected):
    errors = errors_for(mutate)
    assert any(error.startswith(expected) for error in errors), errors


def test_smpp_section_is_checked_against_its_own_schema_file():
    data = base_spec()
    smpp = {"host": "127.0.0.1", "port": 2775, "system_id": "carrierpay", "password_secret": "SMSC_PASSWORD",
            "source_short_codes": ["33001"]}
    data.update(transport="smpp", smpp=dict(smpp))
    data.pop("base_url")
    for operation in data["operations"].values():
        for key in ("request", "response", "results"):
            operation.pop(key, None)
    assert validate_spec(data) == []
    data["smpp"] = "not an object"
    assert validate_spec(data) == ["smpp: 'not an object' is not of type 'object'"]
    data["smpp"] = {key: value for key, value in smpp.items() if key != "password_secret"}
    assert validate_spec(data) == ["smpp: 'password_secret' is a required property"]


def test_base_url_override_order(monkeypatch):
    assert load_spec("oneapi_gb").base_url == "https://oneapi.example.net"
    monkeypatch.setenv("CARRIERPAY_BASE_URL_ONEAPI_GB", "http://127.0.0.1:9/")
    assert load_spec("oneapi_gb").base_url == "http://127.0.0.1:9"
    assert load_spec("oneapi_gb", base_url="http://override").base_url == "http://override"


def test_secrets_come_from_values_environment_then_file(tmp_path):
    secrets_file = tmp_path / "secrets.yaml"
    secrets_file.write_text("FROM_FILE: file-value\nSHADOWED: file-loses\n")
    json_file = tmp_path / "secrets.json"
    json_file.write_text(json.dumps({"FROM_JSON": "json-value"}))
    environ = {"CARRIERPAY_SECRETS_FILE": str(secrets_file), "SHADOWED": "env-wins", "FROM_ENV": "env-value"}
    secrets = Secrets({"EXPLICIT": "explicit-value"}, environ=environ)
    assert secrets.get("EXPLICIT") == "explicit-value"
    assert secrets.get("FROM_ENV") == "env-value"
    assert secrets.get("SHADOWED") == "env-wins"
    assert secrets.get("FROM_FILE") == "file-value"
    assert secrets.resolve({"secret": "FROM_FILE"}) == "file-value"
    assert secrets.resolve("literal") == "literal"
    assert Secrets(environ={}, secrets_file=json_file).get("FROM_JSON") == "json-value"
    with pytest.raises(MissingSecret) as missing:
        secrets.get("NOPE")
    assert "NOPE" in str(missing.value) and "CARRIERPAY_SECRETS_FILE" in str(missing.value)


def callbacks_with(*checks: dict) -> dict:
    data = copy.deepcopy(load_spec("aggregator_ng").data)
    data["callbacks"]["auth"] = list(checks)
    return data


@pytest.mark.parametrize(
    ("checks", "expected"),
    [
        ((), "callbacks.auth: callbacks need a credential check"),
        (({"type": "ip_allow_list", "cidrs": ["203.0.113.0/24"]},),
         "callbacks.auth: callbacks need a credential check"),
        (({"type": "ip_allow_list", "cidrs": ["not-a-net"]}, {"type": "bearer", "token": {"secret": "T_TOKEN"}}),
         "callbacks.auth[0].cidrs[0]: 'not-a-net' is not an IP address or network"),
        (({"type": "bearer", "token": "plain-text-token"},), "callbacks.auth[0].token"),
        (({"type": "bearer", "token": {"secret": "T_TOKEN"}, "header": "X-T", "query": "t"},), "callbacks.auth[0]"),
        (({"type": "mutual_tls"},), "callbacks.auth[0]"),
        (({"type": "mutual_tls", "fingerprints_sha256": ["abc"]},), "callbacks.auth[0].fingerprints_sha256[0]"),
    ],
    ids=["none", "ip only", "bad cidr", "literal token", "header and query", "no identity", "bad pin"],
)
def test_callbacks_need_a_credential_check_that_can_work(checks, expected):
    errors = validate_spec(callbacks_with(*checks))
    assert any(error.startswith(expected) for error in errors), errors


@pytest.mark.parametrize("checks", [
    ({"type": "bearer", "token": {"secret": "T_TOKEN"}}, {"type": "ip_allow_list", "cidrs": ["203.0.113.0/24"]}),
    ({"type": "bearer", "token": {"secret": "T_TOKEN"}, "query": "token"},),
    ({"type": "mutual_tls", "subjects": ["carrier.example"],
      "fingerprints_sha256": ["AB:" * 31 + "CD"]},),
    ({"type": "basic", "username": "carrier", "password": {"secret": "T_PASSWORD"}},),
], ids=["bearer and ip", "bearer in query", "mutual tls", "basic"])
def test_credential_checks_are_accepted(checks):
    assert validate_spec(callbacks_with(*checks)) == []
