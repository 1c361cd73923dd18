"""A whole carrierpay in one test: the four simulators on a shared simulated clock, the carriers
onboarded from carriers/*/carrier.yaml with their base URLs pointed at the simulators, a merchant
with one product priced on each carrier, the callback server, and the adapter daemon (and, when
asked, the reconciler) running as asyncio tasks against the test's own database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from carrierpay.adapters.callback_server import CallbackServer
from carrierpay.adapters.daemon import AdapterDaemon
from carrierpay.adapters.reconciler import Reconciler
from carrierpay.adapters.registry import connector_factory
from carrierpay.lifecycle import stop_tasks
from carrierpay.simulators import SimClock
from carrierpay.simulators.fleet import SECRETS, make_simulators, spec_for

MERCHANT = "acme"
PRODUCT = "gems"
# carrier -> (a subscriber's number prefix, currency, one-time price)
CARRIERS = {
    "oneapi_gb": ("+447700900", "GBP", 300),
    "parlayx_za": ("+2782555", "ZAR", 1000),
    "aggregator_ng": ("+234803555", "NGN", 10_000),
    "batch_in": ("+9198765", "INR", 5_000),
}
FINAL = ("succeeded", "failed", "refunded", "partially_refunded")


def msisdn(carrier: str, n: int) -> str:
    prefix = CARRIERS[carrier][0]
    return prefix + str(n).zfill(13 - len(prefix))


def charge_requests(sim: Any) -> list[dict]:
    """The charge requests a simulator received (throttled and repeated ones included)."""
    def is_charge(request: dict) -> bool:
        if request["method"] != "POST":
            return False
        path, body = request["path"], request["body"]
        return (path.endswith("/transactions/amount") and '"Charged"' in body) or "chargeAmount>" in body \
            or path in ("/v1/charges", "/api/v2/charges")
    return [request for request in sim.received if is_charge(request)]


def setup_database(url: str, specs: dict[str, dict], clock: SimClock) -> None:
    """Onboard the carriers, a merchant, a product priced on each, and align the database clock."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select admin.set_clock(%s)", [clock.now()])
        for spec in specs.values():
            conn.execute("select admin.onboard_carrier(%s)", [Jsonb(spec)])
        conn.execute("select admin.add_merchant(%s, 'Acme Games', null, 1000)", [MERCHANT])
        conn.execute("select admin.add_product(%s, %s, '100 gems')", [MERCHANT, PRODUCT])
        for code, (_, currency, amount) in CARRIERS.items():
            if code in specs:
                conn.execute("select admin.add_price_point(%s, %s, 'one_time', %s, %s, 'gems_100', %s)",
                             [MERCHANT, PRODUCT, amount, currency, code])


class Statements:
    """A test world's statements over its own connection (`self.conn`): all rows, or the first value."""

    conn: psycopg.AsyncConnection

    async def q(self, sql: str, *params: Any) -> list[tuple]:
        cur = await self.conn.execute(sql, params or None)
        return await cur.fetchall() if cur.description else []

    async def one(self, sql: str, *params: Any) -> Any:
        rows = await self.q(sql, *params)
        return rows[0][0] if rows else None


class World(Statements):
    """Use as `async with World(db_url) as world:`; `world.sims[code]`, `world.q(...)`."""

    def __init__(self, db_url: str, *, carriers: list[str] | None = None, rules: dict | None = None,
                 gb_rules: dict | None = None, reconciler: bool = False, adapters: bool = True,
                 timeout_s: float = 2.0, not_deduplicated: tuple[str, ...] = ()) -> None:
        self.url = db_url
        self.codes = carriers or list(CARRIERS)
        self.clock = SimClock()
        self.sims = {code: sim for code, sim in make_simulators(self.clock).items() if code in self.codes}
        self.rules = rules
        self.gb_rules = {"optin_one_time": False} if gb_rules is None else gb_rules
        self.with_reconciler = reconciler
        self.with_adapters = adapters
        self.timeout_s = timeout_s
        self.not_deduplicated = not_deduplicated  # carriers whose charge is NOT safe to repeat
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task] = []
        self.callbacks: CallbackServer | None = None
        self.conn: psycopg.AsyncConnection | None = None
        self.specs: dict[str, dict] = {}
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> World:
        for sim in self.sims.values():
            await self._stack.enter_async_context(sim)
        for code, sim in self.sims.items():
            rules = self.gb_rules if code == "oneapi_gb" else self.rules
            self.specs[code] = spec_for(code, sim.url, rules=rules, timeout_s=self.timeout_s)
            if code in self.not_deduplicated:
                self.specs[code]["operations"]["charge"]["safe_to_repeat"] = False
        await asyncio.to_thread(setup_database, self.url, self.specs, self.clock)
        self.callbacks = await self._stack.enter_async_context(CallbackServer(self.url, secrets=SECRETS))
        self.factory = connector_factory(secrets=SECRETS, callback_base=self.callbacks.base_url)
        self.conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        self.daemon = AdapterDaemon(self.url, self.factory, poll_interval=0.1, lease=timedelta(seconds=30))
        self.reconciler = Reconciler(self.url, self.factory, interval=0.1)
        if self.with_adapters:
            self.start_adapters()
        if self.with_reconciler:
            self.start_reconciler()
        return self

    def start_adapters(self) -> None:
        self.tasks.append(asyncio.ensure_future(self.daemon.run(self.stop)))

    def start_reconciler(self) -> None:
        self.tasks.append(asyncio.ensure_future(self.reconciler.run(self.stop)))

    async def __aexit__(self, *exc_info: Any) -> None:
        await stop_tasks(self.stop, self.tasks, grace_s=5)
        if self.conn is not None:
            await self.conn.close()
        await self._stack.aclose()

    # ------------------------------------------------------------------ database helpers

    def subscriber(self, carrier: str, n: int, balance_minor: int) -> str:
        """The number of a new subscriber of `carrier` (msisdn(carrier, n)) whose balance there is `balance_minor`."""
        number = msisdn(carrier, n)
        self.sims[carrier].add_subscriber(number, balance_minor)
        return number

    async def paid(self, carrier: str, n: int, balance_minor: int, key: str) -> tuple[str, int]:
        """A new subscriber (as `subscriber` makes one) charged once, successfully: (the number, the payment)."""
        number = self.subscriber(carrier, n, balance_minor)
        payment = await self.charge(number, key)
        assert await self.settled(carrier, payment) == "succeeded"  # batch_in: by the day's result file
        return number, payment

    async def charge(self, number: str, key: str, metadata: dict | None = None) -> int:
        document = await self.one("select api.charge(%s, %s, %s, %s, null, %s)", MERCHANT, number, PRODUCT, key,
                                  Jsonb(metadata or {}))
        return document["id"]

    async def charge_many(self, carriers: list[str], per_carrier: int, *, first: int, key: str,
                          poor_every: int) -> dict[int, str]:
        """Charges of `per_carrier` new subscribers on each carrier, every `poor_every`-th of whom cannot
        pay: {procedure id: carrier}."""
        payments: dict[int, str] = {}
        for code in carriers:
            amount = CARRIERS[code][2]
            for n in range(per_carrier):
                number = msisdn(code, first + n)
                self.sims[code].add_subscriber(number, amount - 1 if n % poor_every == 0 else amount * 3)
                payments[await self.charge(number, f"{key}-{code}-{n}")] = code
        return payments

    async def until_carriers_hold(self, transactions: int, why: Callable[[], str] = str) -> None:
        """Wait (a minute at most, in real time) until the carriers together hold that many transactions."""
        deadline = asyncio.get_running_loop().time() + 60
        while sum(len(sim.ledger.transactions) for sim in self.sims.values()) < transactions:
            assert asyncio.get_running_loop().time() < deadline, why()
            await asyncio.sleep(0.02)

    async def open_charges_after(self, rounds: int) -> int:
        """Give the daemons up to `rounds` half-seconds to settle every charge, moving the clock six
        minutes each time (leases run out, reconciliation back-off is due); the charges still open."""
        for _ in range(rounds):
            open_ = await self.one("select count(*) from cp.procedure where kind = 'charge' "
                                   "and status not in ('succeeded', 'failed')")
            if open_ == 0:
                break
            await asyncio.sleep(0.5)
            await self.advance(timedelta(minutes=6))
        return open_

    async def status(self, procedure_id: int) -> str:
        return await self.one("select status::text from cp.procedure where procedure_id = %s", procedure_id)

    async def wait_status(self, procedure_id: int, wanted: tuple[str, ...] = FINAL, timeout: float = 20.0) -> str:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            status = await self.status(procedure_id)
            if status in wanted:
                return status
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"procedure {procedure_id} is {status}, not one of {wanted}")
            await asyncio.sleep(0.05)

    async def settled(self, carrier: str, procedure_id: int) -> str:
        """Its final status; the batch operator's result file comes two hours after acceptance."""
        if carrier == "batch_in":
            await self.awaiting_result(procedure_id)
            await self.advance(timedelta(hours=2))
        return await self.wait_status(procedure_id)

    async def awaiting_result(self, procedure_id: int) -> str:
        """Wait until the carrier has accepted the procedure's call and its result is awaited; the call's
        correlator."""
        await self.wait_until("select bool_or(status = 'awaiting_result') from cp.carrier_call "
                              "where procedure_id = %s", procedure_id)
        return await self.one("select correlator from cp.carrier_call where procedure_id = %s", procedure_id)

    async def wait_until(self, sql: str, *params: Any, timeout: float = 20.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await self.one(sql, *params)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"still false: {sql} {params}")
            await asyncio.sleep(0.05)

    async def advance(self, delta: timedelta) -> None:
        """Move the database clock and every simulator's clock together."""
        self.clock.advance(delta)
        await self.q("select admin.advance_clock(%s)", delta)

    async def journals_balanced(self) -> bool:
        unbalanced = await self.one(
            "select count(*) from (select j.journal_id from cp.journal j join cp.ledger_entry e using (journal_id) "
            "group by j.journal_id having sum(e.amount_minor) <> 0) u")
        return unbalanced == 0

    async def receivable(self, carrier: str) -> int:
        """Our carrier_receivable balance for a carrier (gross charged minus refunded)."""
        return await self.one(
            "select coalesce(sum(e.amount_minor), 0)::bigint from cp.ledger_entry e "
            "join cp.ledger_account a using (account_id) join cp.carrier k on k.carrier_id = a.carrier_id "
            "where a.kind = 'carrier_receivable' and k.code = %s", carrier)


async def assert_each_payment_settled_once(world: World, payments: dict[int, str]) -> dict[str, int]:
    """Every charge is final, charged at most once at its carrier (succeeded exactly when charged), and
    our carrier receivable equals each carrier's own ledger. Returns the count per final status."""
    rows = await world.q(
        "select p.procedure_id, p.status::text, array_agg(c.correlator) from cp.procedure p "
        "join cp.carrier_call c using (procedure_id) where p.kind = 'charge' "
        "and c.operation = 'charge' group by p.procedure_id, p.status")
    assert len(rows) == len(payments)
    statuses: dict[str, int] = {}
    for procedure_id, status, correlators in rows:
        sim = world.sims[payments[procedure_id]]
        charged = [t for correlator in correlators for t in sim.ledger.charges(correlator=correlator)]
        assert len(charged) <= 1, f"payment {procedure_id} charged {len(charged)} times"
        assert (status == "succeeded") == (len(charged) == 1), (procedure_id, status, charged)
        statuses[status] = statuses.get(status, 0) + 1
    for code in {payments[p] for p in payments}:
        assert await world.receivable(code) == world.sims[code].ledger.charged_total(), code
    assert await world.journals_balanced()
    return statuses
