"""Redaction of documents before they leave the payment database (pure functions)."""

from __future__ import annotations

import json

import pytest

from carrierpay.history.redact import MASK, Redactor, mask_msisdn

redact = Redactor()


@pytest.mark.parametrize("key", ["pin", "PIN", "pin_code", "pinHash", "password", "sp_password", "spPassword",
                                 "client_secret", "clientSecret", "access_token", "refreshToken", "Authorization",
                                 "proxy-authorization", "api_key", "X-Api-Key", "secret", "otp", "sig", "Cookie"])
def test_secret_keys_are_masked_at_any_depth(key):
    doc = {"outer": [{"inner": {key: "s3cr3t-value"}}]}
    assert redact(doc) == {"outer": [{"inner": {key: MASK}}]}


@pytest.mark.parametrize("key", ["spin", "opinion", "shipping", "status", "amount", "idempotency_key", "tokenless"])
def test_ordinary_keys_are_kept(key):
    assert redact({key: "value"}) == {key: "value"}


@pytest.mark.parametrize("text, expected", [
    ("Your PIN is 4821. Reply STOP", "Your PIN is [REDACTED]. Reply STOP"),
    ("PIN: 1234", "PIN: [REDACTED]"),
    ("Your PIN code: 1234", "Your PIN code: [REDACTED]"),
    ("Send PIN 99812 to confirm", "Send PIN [REDACTED] to confirm"),
    ("Your Acme PIN for 100 gems (purchase) is 048213. Do not share it.",
     "Your Acme PIN for 100 gems (purchase) is [REDACTED]. Do not share it."),
    ("OTP=ab12cd", "OTP=[REDACTED]"),
    ("the password is: hunter2", "the password is: [REDACTED]"),
    ("Authorization: Bearer eyJhbGciOi.abc.def", "Authorization: Bearer [REDACTED]"),
    ("Basic dXNlcjpwYXNz", "Basic [REDACTED]"),
    ("grant_type=client_credentials&client_secret=abc123&scope=charge",
     "grant_type=client_credentials&client_secret=[REDACTED]&scope=charge"),
    ('{"access_token":"tok123","expires_in":3600}', '{"access_token":"[REDACTED]","expires_in":3600}'),
    ("<ns:spPassword>d41d8cd98f</ns:spPassword>", "<ns:spPassword>[REDACTED]</ns:spPassword>"),
    ("/1/payment/tel%3A%2B447700900123/transactions", "/1/payment/tel%3A%2B4477****123/transactions"),
    ("call +27821234567 now", "call +2782****567 now"),
    ("PIN isn't valid", "PIN isn't valid"),
    ("carrier code 402: insufficient funds", "carrier code 402: insufficient funds"),
])
def test_secrets_inside_strings(text, expected):
    assert redact(text) == expected


def test_personal_fields_keep_prefix_and_last_digits():
    assert mask_msisdn("+447700900123") == "+4477****123"
    assert redact({"msisdn": "+447700900123", "endUserId": "tel:+447700900123", "source_addr": "447700900123"}) == {
        "msisdn": "+4477****123", "endUserId": "tel:+4477****123", "source_addr": "4477****123"}
    assert redact({"msisdn": 447700900123}) == {"msisdn": "4477****123"}


def test_header_pairs_and_input_not_mutated():
    headers = [["Authorization", "Bearer abc.def"], ["Accept", "application/json"]]
    doc = {"headers": headers}
    assert redact(doc) == {"headers": [["Authorization", MASK], ["Accept", "application/json"]]}
    assert headers[0][1] == "Bearer abc.def"


def test_configurable_fields():
    custom = Redactor.from_env({"CARRIERPAY_HISTORY_REDACT_KEYS": "merchant_ref, X-Partner-Key",
                                "CARRIERPAY_HISTORY_PERSONAL_FIELDS": "email_msisdn"})
    doc = {"merchant_ref": "r1", "x_partner_key": "k", "email_msisdn": "+447700900123", "msisdn": "+447700900999"}
    out = custom(doc)
    assert out["merchant_ref"] == MASK and out["x_partner_key"] == MASK
    assert out["email_msisdn"] == "+4477****123"
    assert out["msisdn"] == "+4477****999"  # still masked in text, just no longer a personal field by name
    assert "partner-key=[REDACTED]" in custom("x-partner-key=abc")


def test_nothing_secret_survives_in_a_realistic_carrier_exchange():
    exchange = {
        "request": {"url": "https://api.example/oauth/token", "headers": {"Authorization": "Basic Y3A6c2VjcmV0"},
                    "form": {"grant_type": "client_credentials", "client_id": "cp", "client_secret": "Sup3rS3cret"}},
        "response": {"status": 200, "text": json.dumps({"access_token": "at-9f8e7d", "token_type": "Bearer"})},
    }
    dumped = json.dumps(redact(exchange))
    for secret in ("Y3A6c2VjcmV0", "Sup3rS3cret", "at-9f8e7d"):
        assert secret not in dumped
    assert "client_credentials" in dumped
