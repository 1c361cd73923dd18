"""Shared test helpers: call documents and the secrets each simulator is started with."""

from __future__ import annotations

import itertools
import json
from typing import Any

from carrierpay.adapters.spec import CarrierSpec, load_spec
from carrierpay.simulators.fleet import (  # noqa: F401  (the simulators' credentials, re-exported)
    AGGREGATOR_NG_SECRETS,
    BATCH_IN_SECRETS,
    ONEAPI_GB_SECRETS,
    PARLAYX_ZA_SECRETS,
)

_ids = itertools.count(1)


def simulated_spec(simulator: Any, carrier: str, msisdn: str, balance: int,
                   charge_timeout_s: float | None = None) -> CarrierSpec:
    """A carrier's spec pointed at its running simulator, which holds one subscriber with that balance;
    a charge_timeout_s replaces the spec's own (to make charges time out)."""
    simulator.add_subscriber(msisdn, balance)
    spec = load_spec(carrier, base_url=simulator.url)
    if charge_timeout_s is not None:
        spec.data["operations"]["charge"]["timeout_s"] = charge_timeout_s
    return spec


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




class CallbackSink:
    """A minimal callback server: verifies and parses with the connector helper, records the first
    result per correlator (as the database will) and every delivery; can refuse the first N."""

    def __init__(self, spec, secrets, *, refuse_first: int = 0) -> None:
        self.spec = spec
        self.secrets = secrets
        self.refuse_first = refuse_first
        self.deliveries: list[dict] = []  # every parsed callback, duplicates included
        self.rejections: list[str] = []
        self.settled: dict[str, dict] = {}
        self.arrived = None
        self._runner = None
        self.url = ""

    async def __aenter__(self):
        import asyncio

        from aiohttp import web

        self.arrived = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/callbacks/{code}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/callbacks/{self.spec.code}"
        return self

    async def __aexit__(self, *exc_info):
        await self._runner.cleanup()

    async def _handle(self, request):
        from aiohttp import web

        from carrierpay.adapters.callbacks import CallbackError, verify_and_parse_callback

        body = await request.read()
        if self.refuse_first > 0:
            self.refuse_first -= 1
            return web.Response(status=500, text="busy")
        try:
            parsed = verify_and_parse_callback(
                self.spec, request.method, request.headers, request.query, body, request.remote, secrets=self.secrets
            )
        except CallbackError as exc:
            self.rejections.append(str(exc))
            return web.Response(status=exc.status, text=str(exc))
        self.deliveries.append(parsed)
        self.settled.setdefault(parsed["correlator"], parsed)
        self.arrived.set()
        return web.Response(text="OK")

    async def wait_for(self, correlator: str, timeout: float = 10.0) -> dict:
        import asyncio

        async def settled():
            while correlator not in self.settled:
                self.arrived.clear()
                await self.arrived.wait()
            return self.settled[correlator]

        return await asyncio.wait_for(settled(), timeout)
