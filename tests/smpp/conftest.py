"""Helpers for SMPP tests: a simulator and a connector bound to it over real TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import functools

from carrierpay.adapters.smpp import SmppConnector
from carrierpay.simulators.smsc import SmscSimulator

MSISDN = "+27820000001"
BROKE = "+27820000002"
PASSWORD = "s3cret"


def smpp_section(port: int, **overrides) -> dict:
    section = {
        "host": "127.0.0.1",
        "port": port,
        "system_id": "carrierpay",
        "password_secret": "SMSC_TEST_PASSWORD",
        "source_short_codes": ["33001", "33005"],
        "window": 10,
        "enquire_link_interval_s": 30,
        "response_timeout_s": 5,
        "reconnect_delay_s": 0.05,
        "reconnect_max_delay_s": 0.2,
        "throttle_pause_s": 0.05,
        "throttle_max_retries": 20,
        "mo_id_tlv": "0x1500",
        "premium": {
            "pricing": "short_code",
            "price_points": [{"amount_minor": 500, "currency": "ZAR", "short_code": "33005"}],
        },
        "dlr": {"error_map": {"069": "insufficient_funds"}},
    }
    section.update(overrides)
    return section


class Harness:
    def __init__(self, smsc: SmscSimulator, connector: SmppConnector) -> None:
        self.smsc = smsc
        self.connector = connector
        self.receipts: list[dict] = []
        self.mo: list[dict] = []
        connector.on_receipt = self.receipts.append
        connector.on_mo = self.mo.append

    async def wait(self, predicate, timeout: float = 10.0) -> None:
        await self.smsc.wait_until(predicate, timeout)

    def sms(self, call_id: int, text: str, msisdn: str = MSISDN, **extra) -> dict:
        return {"call_id": call_id, "operation": "send_sms", "correlator": f"cp-{call_id}", "msisdn": msisdn,
                "text": text, **extra}

    def charge(self, call_id: int, msisdn: str = MSISDN, amount_minor: int = 500, text: str = "50 gems") -> dict:
        return {"call_id": call_id, "operation": "charge", "correlator": f"cp-{call_id}", "msisdn": msisdn,
                "text": text, "amount_minor": amount_minor, "currency": "ZAR", "short_code": "33001"}


@contextlib.asynccontextmanager
async def harness(sim: dict | None = None, **section):
    sim_kwargs = dict(system_id="carrierpay", password=PASSWORD, seed=7,
                      subscribers={MSISDN[1:]: 10_000, BROKE[1:]: 100}, price_points={"33005": 500})
    sim_kwargs.update(sim or {})
    async with SmscSimulator(**sim_kwargs) as smsc:
        connector = SmppConnector(smpp_section(smsc.port, **section), {"SMSC_TEST_PASSWORD": PASSWORD})
        h = Harness(smsc, connector)
        await connector.start()
        try:
            yield h
        finally:
            await connector.stop()


def run_async(fn):
    """Run an async test in a fresh event loop with a hard ceiling, so a hang fails instead of blocking CI."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        async def bounded():
            return await asyncio.wait_for(fn(*args, **kwargs), 60)

        return asyncio.run(bounded())

    return wrapper
