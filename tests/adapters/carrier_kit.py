"""Shared test helpers: call documents and the secrets each simulator is started with."""

from __future__ import annotations

import itertools
import json
from typing import Any

_ids = itertools.count(1)

ONEAPI_GB_SECRETS = {"ONEAPI_GB_CLIENT_ID": "carrierpay-gb", "ONEAPI_GB_CLIENT_SECRET": "gb-client-secret-7f3a"}
PARLAYX_ZA_SECRETS = {"PARLAYX_ZA_SP_ID": "000201", "PARLAYX_ZA_SP_PASSWORD": "za-sp-password-91c2"}


def make_call(operation: str = "charge", **fields: Any) -> dict[str, Any]:
    """A call document shaped like adapter.claim_calls output; correlators are unique per call."""
    call_id = next(_ids)
    call = {
        "call_id": call_id,
        "procedure_id": 1000 + call_id,
        "carrier": "test",
        "operation": operation,
        "attempt": 1,
        "correlator": f"cp-{call_id}",
        "msisdn": "+447700900123",
        "amount_minor": 150,
        "currency": "GBP",
        "description": "100 gems",
        "product_code": "gems100",
        "merchant_code": "acme",
    }
    call.update(fields)
    return call


def status_call(charge: dict[str, Any], result: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    original = {
        "correlator": charge["correlator"],
        "carrier_ref": (result or {}).get("carrier_ref"),
        "amount_minor": charge["amount_minor"],
    }
    return make_call("status", msisdn=charge["msisdn"], currency=charge["currency"], original=original, **fields)


def assert_no_secrets(results: list[dict[str, Any]], *secrets: str) -> None:
    """No secret value appears anywhere in the logged request/response documents."""
    logged = json.dumps([{"request": r["request"], "response": r["response"]} for r in results])
    for secret in secrets:
        assert secret not in logged, f"secret {secret[:3]}... leaked into a log"
