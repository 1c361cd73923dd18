"""Two-step carriers over real sockets: a reservation its charge can no longer confirm is released with
one call of the carrier's cancel operation, and the subscriber's balance comes back at the carrier.
The carrier is tests/adapters/fifth_carrier.yaml (reserve, then capture; release) against the OneAPI
simulator, which holds a reserved amount until it is captured, released or lapses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from harness import Statements
from psycopg.types.json import Jsonb

from carrierpay.adapters.daemon import AdapterDaemon
from carrierpay.adapters.reconciler import Reconciler
from carrierpay.adapters.registry import connector_factory
from carrierpay.adapters.spec import load_spec
from carrierpay.simulators.oneapi import OneApiFlavor, OneApiSimulator

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "tests" / "adapters" / "fifth_carrier.yaml"
KEY = "ke-operator-key-4d2f"
SECRETS = {"RESERVE_KE_KEY": KEY}
CODES = {
    "insufficient_funds": ("KE-402", "Balance too low"), "barred": ("KE-403", "Line is barred"),
    "invalid": ("KE-400", "Bad request"), "throttled": ("KE-429", "Slow down"), "transient": ("KE-503", "Try later"),
    "not_found": ("KE-410", "No such transaction"), "unknown_subscriber": ("KE-404", "Unknown line"),
    "limit_exceeded": ("KE-409", "Daily limit reached"), "consent_refused": ("KE-451", "No consent"),
}
PRICE = 5000


def number(n: int) -> str:
    return f"+25471150{n:04d}"


class TwoStepWorld(Statements):
    """The simulator, the carrier onboarded from its spec, a merchant and a price, and the adapter daemon."""

    def __init__(self, url: str) -> None:
        self.url = url
        flavor = OneApiFlavor(prefix="/billing/v3", auth="api_key", api_key_header="X-Operator-Key",
                              response_format="xml", codes=CODES)
        self.sim = OneApiSimulator(api_key=KEY, flavor=flavor, currency="KES", timezone="Africa/Nairobi", seed=2)
        self.factory = connector_factory(secrets=SECRETS)
        self.adapter: tuple[asyncio.Event, asyncio.Task] | None = None
        self.conn: psycopg.AsyncConnection | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> TwoStepWorld:
        await self._stack.enter_async_context(self.sim)
        spec = load_spec(SPEC, base_url=self.sim.url).data
        spec.update(base_url=self.sim.url, regulation="DEFAULT", rules={"optin_one_time": False})
        self.spec = spec
        self.conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        await self.q("select admin.set_clock(%s)", self.sim.clock.now())
        await self.q("select admin.onboard_carrier(%s)", Jsonb(spec))
        await self.q("select admin.add_merchant('acme', 'Acme Games', null, 1000)")
        await self.q("select admin.add_product('acme', 'gems', '100 gems')")
        await self.q("select admin.add_price_point('acme', 'gems', 'one_time', %s, 'KES', 'gems_100', 'reserve_ke')",
                     PRICE)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop_adapter()
        await self.conn.close()
        await self._stack.aclose()

    def start_adapter(self) -> None:
        stop = asyncio.Event()
        daemon = AdapterDaemon(self.url, self.factory, poll_interval=0.05, lease=timedelta(seconds=30))
        self.adapter = (stop, asyncio.ensure_future(daemon.run(stop)))

    async def stop_adapter(self) -> None:
        if self.adapter is not None:
            stop, task = self.adapter
            stop.set()
            await asyncio.wait_for(task, 10)
            self.adapter = None

    async def reconcile_once(self) -> None:
        await Reconciler(self.url, self.factory, interval=0.05).run(once=True)

    async def advance(self, delta: timedelta) -> None:
        self.sim.clock.advance(delta)
        await self.q("select admin.advance_clock(%s)", delta)

    async def charge(self, msisdn: str, key: str) -> int:
        return (await self.one("select api.charge('acme', %s, 'gems', %s)", msisdn, key))["id"]

    async def reservation(self, procedure_id: int) -> str | None:
        return await self.one("select status from cp.reservation where procedure_id = %s "
                              "order by reservation_id desc limit 1", procedure_id)

    async def wait_until(self, sql: str, *params: Any, timeout: float = 20.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while not (value := await self.one(sql, *params)):
            if asyncio.get_running_loop().time() > deadline:
                dump = await self.q("select call_id, operation, status::text, reason, lease_no, answered_lease_no, "
                                    "carrier_code from cp.carrier_call order by call_id")
                dump += await self.q("select * from cp.reservation")
                dump += await self.q("select call_id, outcome, reason, response::text from cp.carrier_log")
                raise AssertionError(f"still false: {sql} {params}: {dump} {self.sim.received}")
            await asyncio.sleep(0.05)
        return value

    async def wait_reservation(self, procedure_id: int, status: str) -> None:
        await self.wait_until("select exists (select 1 from cp.reservation where procedure_id = %s and status = %s)",
                              procedure_id, status)

    def releases(self, msisdn: str) -> list[Any]:
        return [t for t in self.sim.ledger.transactions if t.kind == "release" and t.msisdn == msisdn]

    def release_requests(self) -> list[dict]:
        return [r for r in self.sim.received if '"Released"' in (r.get("body") or "")]


async def test_a_confirmation_refused_for_good_releases_the_reservation_once(db_url):
    async with TwoStepWorld(db_url) as world:
        msisdn = number(1)
        world.sim.add_subscriber(msisdn, 8000)
        world.sim.faults.inject("deny", operation="capture")
        world.start_adapter()
        payment = await world.charge(msisdn, "k-denied")
        await world.wait_reservation(payment, "released")
        assert await world.one("select status::text from cp.procedure where procedure_id = %s", payment) == "failed"
        # The subscriber's money is free again at the carrier, at once, not after its 15 minutes.
        assert world.sim.billing.held(msisdn) == 0 and world.sim.balance(msisdn) == 8000
        assert [t.status for t in world.releases(msisdn)] == ["succeeded"] and len(world.release_requests()) == 1
        # A late duplicate: asking to release it again queues nothing and sends nothing.
        reservation_id = await world.one("select reservation_id from cp.reservation where procedure_id = %s", payment)
        assert await world.one("select cp.release_reservation(%s, 'again')", reservation_id) is None
        # The next purchase finds the money and is captured: nothing to release.
        paid = await world.charge(msisdn, "k-paid")
        await world.wait_reservation(paid, "captured")
        await world.wait_until("select status = 'succeeded' from cp.procedure where procedure_id = %s", paid)
        assert world.sim.ledger.charged_total(msisdn) == PRICE and world.sim.balance(msisdn) == 8000 - PRICE
        assert len(world.release_requests()) == 1
        assert await world.one("select count(*) from cp.carrier_call where operation = 'release'") == 1


async def test_a_queued_confirmation_given_up_or_cancelled_releases_its_reservation(db_url):
    """Throttled captures wait on the queue holding their reservations. One is cancelled by the merchant, the
    other is still waiting when our confirmation window closes: both are released, and the money is back."""
    async with TwoStepWorld(db_url) as world:
        waiting, cancelled = number(2), number(3)
        for msisdn in (waiting, cancelled):
            world.sim.add_subscriber(msisdn, 8000)
        world.sim.faults.inject("throttle", operation="capture", times=20)
        world.start_adapter()
        expired = await world.charge(waiting, "k-waits")
        prepared = await world.one(
            "select api.prepare_payment('acme', %s, 'gems')",
            Jsonb({"amountTransaction": {"phoneNumber": cancelled, "referenceCode": "p-1", "paymentAmount": {
                "chargingInformation": {"amount": 50, "currency": "KES", "description": "gems"}}}}))
        await world.q("select api.confirm_payment('acme', %s, %s)", prepared["paymentId"],
                      Jsonb({"phoneNumber": cancelled}))
        for payment in (expired, int(prepared["paymentId"])):
            await world.wait_until("select exists (select 1 from cp.reservation r join cp.carrier_call c using "
                                   "(call_id) where r.procedure_id = %s and r.status = 'held' and c.status = 'queued')",
                                   payment)
        await world.stop_adapter()  # the confirmations stay queued
        assert world.sim.billing.held(waiting) == PRICE and world.sim.billing.held(cancelled) == PRICE

        answer = await world.one("select api.cancel_payment('acme', %s, %s)", prepared["paymentId"],
                                 Jsonb({"phoneNumber": cancelled}))
        assert answer["paymentStatus"] == "cancelled"
        await world.advance(timedelta(minutes=8))  # past half the carrier's 900 s
        await world.reconcile_once()
        assert await world.one("select reason from cp.procedure where procedure_id = %s", expired) == "expired"

        world.start_adapter()
        for payment in (expired, int(prepared["paymentId"])):
            await world.wait_reservation(payment, "released")
        for msisdn in (waiting, cancelled):
            assert world.sim.billing.held(msisdn) == 0 and world.sim.balance(msisdn) == 8000
            assert len(world.releases(msisdn)) == 1 and world.sim.ledger.charges(msisdn) == []
        await world.reconcile_once()  # nothing is given up or released twice
        assert len(world.release_requests()) == 2


async def test_a_release_not_sent_before_the_carrier_lets_the_reservation_lapse_is_never_sent(db_url):
    """The release is turned away (throttled) and waits; by the time the carrier's own expiry has passed, the
    carrier has released the money itself, so the release is dropped, never sent late."""
    async with TwoStepWorld(db_url) as world:
        msisdn = number(4)
        world.sim.add_subscriber(msisdn, 8000)
        world.sim.faults.inject("deny", operation="capture")
        world.sim.faults.inject("throttle", operation="release")
        world.start_adapter()
        payment = await world.charge(msisdn, "k-late")
        await world.wait_until("select exists (select 1 from cp.reservation r join cp.carrier_call c "
                               "on c.call_id = r.release_call_id where r.procedure_id = %s and c.status = 'queued' "
                               "and c.answered_lease_no = 1)", payment)
        await world.stop_adapter()
        assert world.sim.billing.held(msisdn) == PRICE
        await world.advance(timedelta(minutes=16))  # the carrier's 900 s are over: it released the money itself
        await world.reconcile_once()
        assert await world.reservation(payment) == "lapsed"
        world.start_adapter()
        await asyncio.sleep(0.5)
        assert len(world.release_requests()) == 1 and world.releases(msisdn) == []  # only the turned-away one
        assert world.sim.billing.held(msisdn) == 0 and world.sim.balance(msisdn) == 8000


async def start_adapter_process(url: str, log: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, **SECRETS, "PYTHONPATH": str(REPO), "CARRIERPAY_DATABASE_URL": url}
    handle = log.open("ab")
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "carrierpay", "adapters", "run", "--lease", "20", "--poll", "0.1",
        env=env, stdout=handle, stderr=handle, cwd=str(REPO))


async def test_an_adapter_killed_between_reserve_and_cancel_releases_once(db_url, tmp_path):
    """The confirmation is refused, the release reaches the carrier, and the adapter is killed before its
    answer: the release is sent again under the same correlator, which the carrier answers from the first
    time. One release at the carrier, the money back, the reservation released."""
    async with TwoStepWorld(db_url) as world:
        msisdn = number(5)
        world.sim.add_subscriber(msisdn, 8000)
        world.sim.faults.inject("deny", operation="capture")
        world.sim.faults.hold("release")
        log = tmp_path / "adapter.log"
        process = await start_adapter_process(db_url, log)
        try:
            payment = await world.charge(msisdn, "k-killed")
            deadline = asyncio.get_running_loop().time() + 30
            while not world.releases(msisdn):
                assert asyncio.get_running_loop().time() < deadline, log.read_text()[-3000:]
                await asyncio.sleep(0.05)
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        world.sim.faults.release("release")
        assert await world.reservation(payment) == "releasing"
        assert world.sim.billing.held(msisdn) == 0  # the carrier applied it; we do not know yet

        await world.advance(timedelta(seconds=30))  # the dead adapter's lease runs out
        await world.reconcile_once()
        world.start_adapter()
        await world.wait_reservation(payment, "released")
        assert len(world.release_requests()) == 2
        correlators = {json.loads(r["body"])["amountTransaction"]["clientCorrelator"] for r in world.release_requests()}
        assert len(correlators) == 1, correlators
        assert [t.status for t in world.releases(msisdn)] == ["succeeded"] and world.sim.balance(msisdn) == 8000
        assert await world.one("select count(*) from cp.carrier_call where operation = 'release'") == 1
