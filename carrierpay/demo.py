"""`carrierpay demo`: a whole carrierpay deployment on one machine, driven through a simulated week.

What it does, in order:

1. starts the embedded PostgreSQL (or uses CARRIERPAY_DATABASE_URL), recreates the databases
   `carrierpay_demo` and `carrierpay_demo_history`, and migrates the first;
2. starts the four HTTP carrier simulators in this process (asyncio) on one simulated clock, with
   seeded subscriber populations (balances and habitual top-up hours);
3. onboards the shipped carriers (GB, ZA, NG, IN) from copies of their specs pointed at the
   simulators, with the throughput raised so a week fits in minutes; two merchants, each with a
   daily subscription (two or three price points per carrier, for step-down) and a one-time product;
4. runs the daemons in this process: adapter daemon, reconciler, callback server (the NG aggregator
   reports by callback), webhook dispatcher (to a local receiver that checks every signature, on
   loopback over plain http, both allowed explicitly for the demo); the
   history shipper runs in a child process (its redaction and JSON work get the other core); the
   scheduler is ticked by the driver once per simulated hour; and the merchant HTTP API server, with
   the HTTP merchant's backend and its HTTPS sink (`demo_http.py`);
5. signs subscribers up: the SQL merchant's in SQL batches through `api.subscribe`, the HTTP
   merchant's through `POST /carrierpay/v1/subscriptions`; each reads the PIN off the simulated
   handset and confirms it (`api.confirm_optin` or `/consents/{id}/validate`), except those who
   never do; some buy once (the HTTP merchant through CAMARA `createPayment`; where the
   carrier's regulation says `optin_one_time`, read from `report.list_carrier_rules()`, as GB's does,
   only the SQL merchant sells, after `api.request_optin` + confirmation); a few cancel or get
   refunds (CAMARA `createRefund` for the HTTP merchant);
6. moves the business clock (`admin.advance_clock`) and the simulators' clock together, hour by hour;
7. prints a report per carrier from `report.carrier_summary` and checks: journals balanced, no
   procedure stuck, our carrier receivable equals each simulator's own ledger, webhooks and sink
   notifications delivered, the HTTP merchant served without a server error,
   history shipped. Exits non-zero when a check fails.

Everything the demo knows about money it reads from the database or from the simulators' own
ledgers; none of the business rules are repeated here. `carrierpay demo --shards N` runs the same
phases and checks over a front and N partitions (carrierpay/demo_shards.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import psycopg
from aiohttp import web
from psycopg.types.json import Jsonb

from carrierpay import config, migrate, queries
from carrierpay.db import redact_url
from carrierpay.demo_http import major
from carrierpay.lifecycle import stop_tasks
from carrierpay.logmask import MaskingFormatter
from carrierpay.loopback_http import LoopbackServer
from carrierpay.simulators import SimClock
from carrierpay.simulators.fleet import SECRETS, make_simulators, spec_for

log = logging.getLogger("carrierpay.demo")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # demo.log, from both processes

DEMO_DATABASE = "carrierpay_demo"
DEMO_HISTORY_DATABASE = "carrierpay_demo_history"
# A Monday, 08:00 UTC: inside every demo carrier's charging hours (GB 08-22, ZA 06-22, NG 07-21, IN 09-21 local).
START = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)
DEMO_TPS = 2000  # the shipped specs say 10-40 requests/s; the simulators take far more
SIGNUP_HOURS = 6  # sign-ups are spread over the first hours of day 1 (all inside every charging window)
BATCH = 500  # rows per SQL batch of api.* calls
SETTLE_TIMEOUT_S = 60.0
# The simulators answer at once; a generous timeout still rides out a loaded machine, and an
# unknown outcome can be reconciled twice this long after the call (in real time).
DEMO_TIMEOUT_S = 8.0
PIN_TEXT = re.compile(r" is (\d{4,10})\. Do not share it\.")
# This merchant integrates over the HTTP API (carrierpay/demo_http.py); the other one over SQL.
HTTP_MERCHANT = "pixelforge"


@dataclass(frozen=True)
class Market:
    """One carrier of the demo: its number plan and what the merchants charge there (minor units)."""

    carrier: str
    country: str
    currency: str
    prefix: str
    length: int  # E.164 length with the '+'
    share: float  # fraction of the subscribers
    prices: dict[str, tuple[int, ...]]  # product -> price points (subscriptions) or (price,) (one-time)

    def msisdn(self, n: int) -> str:
        return self.prefix + str(n).zfill(self.length - len(self.prefix))

    @property
    def capacity(self) -> int:
        return 10 ** (self.length - len(self.prefix))


MARKETS = (
    Market("oneapi_gb", "GB", "GBP", "+4477009", 13, 0.30,
           {"arena_pass": (150, 100, 50), "gems": (299,), "tunebox": (99, 49), "album": (499,)}),
    Market("parlayx_za", "ZA", "ZAR", "+2782555", 12, 0.25,
           {"arena_pass": (500, 300, 150), "gems": (1500,), "tunebox": (300, 150), "album": (2500,)}),
    Market("aggregator_ng", "NG", "NGN", "+234803555", 14, 0.25,
           {"arena_pass": (10000, 5000, 2500), "gems": (50000,), "tunebox": (5000, 2500), "album": (100000,)}),
    Market("batch_in", "IN", "INR", "+9198765", 13, 0.20,
           {"arena_pass": (1000, 500, 200), "gems": (4900,), "tunebox": (500, 300), "album": (9900,)}),
)


@dataclass(frozen=True)
class Merchant:
    code: str
    name: str
    platform_fee_bp: int
    subscription: str  # product code, daily plan
    subscription_name: str
    one_time: str
    one_time_name: str
    plan: str  # the subscription's plan
    share: float  # fraction of subscribers who subscribe to this merchant


MERCHANTS = (
    Merchant("pixelforge", "PixelForge Games", 1000, "arena_pass", "Arena Pass", "gems", "500 gems", "daily", 0.35),
    Merchant("tunebox", "TuneBox Music", 800, "tunebox", "TuneBox Unlimited", "album", "Album of the week", "weekly",
             0.65),
)
VARIANTS = {"arena_pass": ("arena_gold", "arena_silver", "arena_bronze"), "tunebox": ("tunebox_hifi", "tunebox_lite"),
            "gems": ("gems_500",), "album": ("album_full",)}


@dataclass
class Person:
    """A simulated user: a handset on one carrier, a merchant they subscribe to, and their habits."""

    msisdn: str
    market: Market
    merchant: Merchant
    profile: str  # comfortable | tight | broke | barred
    confirms: bool  # answers the PIN SMS at all
    wrong_pin_first: bool
    cohort: int
    subscription_id: int | None = None
    optin_id: int | None = None


@dataclass
class DemoOptions:
    subscribers: int = 10_000
    days: int = 7
    seed: int = 42
    keep: bool = False
    summary: Path | None = None
    database_url: str | None = None
    dashboard_port: int = 8700
    shards: int = 0  # 0: one database; N: a front and N partitions (carrierpay/demo_shards.py)


@dataclass
class Stats:
    subscribe_errors: Counter = field(default_factory=Counter)
    confirmed: int = 0
    wrong_pins: int = 0
    never_confirmed: int = 0
    purchases: int = 0
    purchase_errors: Counter = field(default_factory=Counter)
    refunds: int = 0
    refund_errors: Counter = field(default_factory=Counter)
    cancellations: int = 0
    settle_timeouts: int = 0
    scheduler_errors: Counter = field(default_factory=Counter)  # message -> ticks it failed
    settling_hours: float = 0.0
    http_payments: int = 0  # created over the HTTP API
    http_refunds: int = 0


def succeeded(documents: list[dict], refusals: Counter) -> int:
    """How many of the SQL API's documents report success; the others are counted in `refusals` by error."""
    errors = [document["error"] for document in documents if "error" in document]
    refusals.update(errors)
    return len(documents) - len(errors)


def created(answers: list[tuple[int, dict]], refusals: Counter) -> int:
    """How many of the HTTP API's answers created what was asked (201); the others are counted in
    `refusals` by status and error code."""
    errors = [f"HTTP {status} {document.get('code')}" for status, document in answers if status != 201]
    refusals.update(errors)
    return len(answers) - len(errors)


def wrong_pin(pin: str) -> str:
    """A mistyped PIN: the right one plus one, same number of digits."""
    return f"{(int(pin) + 1) % 10 ** len(pin):0{len(pin)}d}"


def money(amount_minor: int, currency: str, exponent: int) -> str:
    return f"{amount(amount_minor, exponent)} {currency}"


def amount(amount_minor: int, exponent: int) -> str:
    """Minor units in major units with the currency's own decimals; `exponent` comes from the database
    (`currency_exponents`): 2 for GBP, 0 for UGX, 3 for KWD."""
    return f"{Decimal(amount_minor).scaleb(-exponent):,.{exponent}f}"


async def currency_exponents(conn: psycopg.AsyncConnection, currencies: list[str]) -> dict[str, int]:
    """The exponent of each currency, as the database defines it (cp.currency_exponent)."""
    cur = await conn.execute(queries.CURRENCY_EXPONENTS, {"currencies": sorted(set(currencies))})
    return dict(await cur.fetchall())


def _replace_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


# --------------------------------------------------------------------------- the database


@dataclass
class DemoDatabase:
    url: str
    history_url: str
    admin_url: str
    cluster: Any | None  # EmbeddedCluster when we run the embedded one
    started_cluster: bool


def prepare_database(database_url: str | None, say: Callable[[str], None]) -> DemoDatabase:
    """Start the embedded cluster if needed, recreate the demo databases, migrate."""
    from carrierpay import db

    where = db.target(database_url)
    started = False
    cluster = where.embedded
    if cluster is not None:
        if cluster.init():
            say(f"created a PostgreSQL {cluster.describe_location()}")
        started = cluster.start()
        say(f"PostgreSQL {'started' if started else 'already running'} on port {cluster.port}")
        admin_url = cluster.url("postgres")
    else:
        admin_url = _replace_database(where.url, "postgres")
        say(f"using the configured server for {DEMO_DATABASE}")
    try:
        return _recreate_demo_databases(admin_url, cluster, started, say)
    except BaseException:
        if started:
            cluster.stop()
        raise


def _recreate_demo_databases(admin_url: str, cluster: Any | None, started: bool,
                             say: Callable[[str], None]) -> DemoDatabase:
    from carrierpay.embedded import create_available_extensions

    url = _replace_database(admin_url, DEMO_DATABASE)
    history_url = _replace_database(admin_url, DEMO_HISTORY_DATABASE)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name in (DEMO_DATABASE, DEMO_HISTORY_DATABASE):
            conn.execute(f'drop database if exists "{name}" with (force)')
            conn.execute(f'create database "{name}" template template0 encoding utf8')
        # A throwaway database: a commit need not wait for the WAL flush (no risk of corruption,
        # at worst the last moment of a crash is lost).
        conn.execute(f'alter database "{DEMO_DATABASE}" set synchronous_commit = off')
        conn.execute(f'alter database "{DEMO_HISTORY_DATABASE}" set synchronous_commit = off')
    create_available_extensions(url)
    migrate.migrate(url)
    say(f"database {DEMO_DATABASE} recreated and migrated")
    return DemoDatabase(url, history_url, admin_url, cluster, started)


# --------------------------------------------------------------------------- the merchants' side


class WebhookReceiver(LoopbackServer):
    """The merchants' webhook endpoint: verifies every signature, counts deliveries, remembers
    collected payments (the merchants refund some of them later, as a support desk would)."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.kinds: Counter = Counter()
        self.seen: set[tuple[str, int]] = set()
        self.duplicates = 0
        self.bad_signatures = 0
        self.paid: list[tuple[str, int, str]] = []  # (merchant, payment id, created_at)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/hooks/{merchant}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        from carrierpay.webhooks import verify

        merchant = request.match_info["merchant"]
        body = await request.read()
        secret = self.secrets.get(merchant)
        if secret is None or not verify(secret, body, request.headers.get("X-Carrierpay-Signature", "")):
            self.bad_signatures += 1
            return web.Response(status=401, text="bad signature")
        document = json.loads(body)
        key = (merchant, int(document["id"]))
        if key in self.seen:
            self.duplicates += 1
            return web.Response(text="duplicate")
        self.seen.add(key)
        self.kinds[document["type"]] += 1
        data = document.get("data") or {}
        if document["type"] == "payment.succeeded" and data.get("kind") == "charge":
            self.paid.append((merchant, int(data["id"]), str(data.get("created_at", ""))))
        return web.Response(text="ok")


# --------------------------------------------------------------------------- the run


def ship_history(database_url: str, history_url: str, logfile: Path | None, stop: Any, errors: Any) -> None:
    """The demo's history shipper (a child process): ships until `stop` is set, then drains."""
    from carrierpay.history.shipper import Shipper
    from carrierpay.history.stores import open_store

    if logfile is not None:
        handler = logging.FileHandler(logfile, mode="a")
        handler.setFormatter(MaskingFormatter(LOG_FORMAT))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
    shipper = Shipper(database_url, open_store(history_url), name="demo-shipper", batch_size=5000)
    try:
        shipper.run(interval=1.0, stop=stop, retention=False)
        shipper.drain()
    except Exception as exc:  # reported as a failed check, not a crash of the demo
        errors.put(f"{type(exc).__name__}: {exc}")
        log.exception("history shipper failed")
    finally:
        shipper.close()


class Demo:
    def __init__(self, options: DemoOptions, database: DemoDatabase, console: Any,
                 logfile: Path | None = None) -> None:
        self.options = options
        self.logfile = logfile
        self.db = database
        self.console = console
        self.rng = random.Random(options.seed)
        self.clock = SimClock(START)
        self.sims = make_simulators(self.clock, seed=options.seed)
        for sim in self.sims.values():
            sim.record_requests = False
        self.specs: dict[str, dict] = {}
        self.people: list[Person] = []
        self.stats = Stats()
        self.receiver = WebhookReceiver()
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task] = []
        self.conn: psycopg.AsyncConnection | None = None
        self.batch_conns: list[psycopg.AsyncConnection] = []  # batches of api.* calls run on two at once
        self.text_positions: dict[str, int] = defaultdict(int)
        self.pins: dict[str, str] = {}  # msisdn -> the last PIN its handset received
        self.callback_carriers: list[str] = []
        self.one_time_optin: set[str] = set()  # carriers whose regulation wants an opt-in per purchase
        self.keys = 0
        self._stack = contextlib.AsyncExitStack()
        self._processes = multiprocessing.get_context("spawn")
        self._shipper_stop = self._processes.Event()
        self._shipper_errors = self._processes.SimpleQueue()
        self._shipper: multiprocessing.process.BaseProcess | None = None
        self.shipper_error: str | None = None
        self.dashboard: tuple[str, str, str] | None = None  # address, login, password
        self.http: Any = None  # the HTTP merchant's backend (demo_http.HttpMerchant)
        self.sink: Any = None
        self.sink_cert: Path | None = None
        self.exponents: dict[str, int] = {}
        self.http_refunded: set[str] = set()

    # ------------------------------------------------------------------ helpers

    def key(self, prefix: str) -> str:
        self.keys += 1
        return f"demo-{prefix}-{self.keys}"

    async def q(self, sql: str, params: Any = None) -> list[tuple]:
        cur = await self.conn.execute(sql, params)
        return await cur.fetchall() if cur.description else []

    async def one(self, sql: str, params: Any = None) -> Any:
        rows = await self.q(sql, params)
        return rows[0][0] if rows else None

    async def batched(self, sql: str, columns: list[list], size: int = BATCH) -> list[dict]:
        """Run `sql` (a select over unnest of the given columns, with ordinality) batch by batch, the
        batches spread over the driver's connections; documents come back in the input order."""
        total = len(columns[0]) if columns else 0
        starts = list(range(0, total, size))

        async def worker(conn: psycopg.AsyncConnection, mine: list[int]) -> list[tuple[int, list[dict]]]:
            done = []
            for start in mine:
                cur = await conn.execute(sql, [column[start:start + size] for column in columns])
                done.append((start, [document for _, document in sorted(await cur.fetchall())]))
            return done

        n = len(self.batch_conns)
        parts = await asyncio.gather(*(worker(conn, starts[i::n]) for i, conn in enumerate(self.batch_conns)))
        return [document for _, chunk in sorted(pair for part in parts for pair in part) for document in chunk]

    # ------------------------------------------------------------------ setup

    async def open_world(self) -> None:
        """The carriers' simulators, the merchants' receiver and the driver's connections to the
        database (the front, when there are partitions: its api.* calls are routed there)."""
        for sim in self.sims.values():
            await self._stack.enter_async_context(sim)
        await self.receiver.start()
        self._stack.push_async_callback(self.receiver.stop)
        self.conn = await psycopg.AsyncConnection.connect(self.db.url, autocommit=True)
        self._stack.push_async_callback(self.conn.close)
        for _ in range(2):
            conn = await psycopg.AsyncConnection.connect(self.db.url, autocommit=True)
            self._stack.push_async_callback(conn.close)
            await conn.execute(queries.DEMO_TRY_FUNCTIONS)
            self.batch_conns.append(conn)

    async def start(self) -> None:
        await self.open_world()
        await self.q(queries.SET_CLOCK, {"at": self.clock.now()})
        for market in MARKETS:
            self.specs[market.carrier] = spec_for(market.carrier, self.sims[market.carrier].url, tps=DEMO_TPS,
                                                  timeout_s=DEMO_TIMEOUT_S, connect_s=5.0)
            await self.q(queries.ONBOARD_CARRIER, {"spec": Jsonb(self.specs[market.carrier])})
        self.callback_carriers = [code for code, spec in self.specs.items() if spec.get("callbacks")]
        self.one_time_optin = {code for (code,) in await self.q(queries.DEMO_ONE_TIME_OPTIN_CARRIERS)}
        # The merchants' receiver is a local plain-http server: allowed here, explicitly (https only otherwise).
        await self.q(queries.ALLOW_HTTP_WEBHOOK_URLS)
        for merchant in MERCHANTS:
            document = await self.one(queries.ADD_MERCHANT, {
                "code": merchant.code, "name": merchant.name, "platform_fee_bp": merchant.platform_fee_bp,
                "webhook_url": f"{self.receiver.url}/hooks/{merchant.code}"})
            self.receiver.secrets[merchant.code] = document["webhook_secret"]
            await self.q(queries.ADD_PRODUCT, {"merchant": merchant.code, "code": merchant.subscription,
                                               "name": merchant.subscription_name, "retry_policy": "step_down",
                                               "retry_timing": "best_hour"})
            await self.q(queries.ADD_PRODUCT, {"merchant": merchant.code, "code": merchant.one_time,
                                               "name": merchant.one_time_name, "retry_policy": "step_down",
                                               "retry_timing": "best_hour"})
            for market in MARKETS:
                for product, plan in ((merchant.subscription, merchant.plan), (merchant.one_time, "one_time")):
                    for amount, variant in zip(market.prices[product], VARIANTS[product], strict=False):
                        await self.q(queries.ADD_PRICE_POINT, {
                            "merchant": merchant.code, "product": product, "plan": plan, "amount": amount,
                            "currency": market.currency, "variant": variant, "carrier": market.carrier,
                            "country": None})
        await self.start_http_merchant()
        self.make_people()
        # A few charges whose answer is lost after the carrier applied them (the connection drops):
        # settled by a status query five minutes (business time) later, never sent twice.
        for code in ("oneapi_gb", "parlayx_za"):
            self.sims[code].faults.inject("drop_after_charge", operation="charge", times=2)
        await self.start_daemons()

    async def start_http_merchant(self) -> None:
        """The API server in this process, an API client for the HTTP merchant, its backend and its sink."""
        import shutil
        import tempfile

        from carrierpay.demo_http import HttpMerchant, Sink, make_certificate
        from carrierpay.http_api.server import ApiServer

        self.exponents = await currency_exponents(self.conn, [market.currency for market in MARKETS])
        directory = Path(tempfile.mkdtemp(prefix="carrierpay-demo-sink-"))
        self._stack.callback(shutil.rmtree, directory, True)
        self.sink_cert, key = make_certificate(directory)
        self.sink = await Sink(self.sink_cert, key).start()
        self._stack.push_async_callback(self.sink.stop)
        api = await ApiServer(self.db.url, port=0).start()
        self._stack.push_async_callback(api.stop)
        merchant = next(m for m in MERCHANTS if m.code == HTTP_MERCHANT)
        client = await self.one(queries.ADD_API_CLIENT, {"merchant": HTTP_MERCHANT, "scopes": None,
                                                         "default_product": merchant.one_time})
        # The demo plays a week in minutes: its merchant's requests come far faster than a real week's.
        await self.one(queries.SET_API_CLIENT_RATE_LIMIT, {"client_id": client["client_id"],
                                                           "requests_per_second": 100000})
        self.http = await HttpMerchant(api.base_url, client, self.sink).start()
        self._stack.push_async_callback(self.http.stop)

    def make_people(self) -> None:
        counts = {market.carrier: 0 for market in MARKETS}
        for i in range(self.options.subscribers):
            market = self.rng.choices(MARKETS, weights=[m.share for m in MARKETS])[0]
            counts[market.carrier] += 1
            if counts[market.carrier] >= market.capacity:
                raise ValueError(f"too many subscribers for {market.carrier}'s number range")
            merchant = self.rng.choices(MERCHANTS, weights=[m.share for m in MERCHANTS])[0]
            prices = market.prices[merchant.subscription]
            top, low = prices[0], prices[-1]
            roll = self.rng.random()
            sim = self.sims[market.carrier]
            number = market.msisdn(counts[market.carrier])
            topup_hour = self.rng.choice([7, 8, 9, 12, 13, 18, 19, 20])
            if roll < 0.58:
                profile = "comfortable"
                sim.add_subscriber(number, top * self.rng.randint(8, 30), topup_hour=topup_hour,
                                   topup_minor=top * self.rng.randint(1, 3))
            elif roll < 0.83:
                profile = "tight"  # pays some days; top-ups at a habitual hour rescue retries
                sim.add_subscriber(number, self.rng.randint(low, top * 2), topup_hour=topup_hour,
                                   topup_minor=self.rng.choice([low, (top + low) // 2, top]))
            elif roll < 0.97:
                profile = "broke"  # can only ever afford the lowest price, some not even that
                sim.add_subscriber(number, self.rng.randint(0, low * 2), topup_hour=topup_hour,
                                   topup_minor=self.rng.choice([0, 0, low]))
            else:
                profile = "barred"
                sim.add_subscriber(number, top * 10, state="barred")
            self.people.append(Person(
                msisdn=number, market=market, merchant=merchant, profile=profile,
                confirms=self.rng.random() < 0.88, wrong_pin_first=self.rng.random() < 0.05,
                cohort=i % SIGNUP_HOURS))

    async def start_daemons(self) -> None:
        from carrierpay.adapters.callback_server import CallbackServer
        from carrierpay.adapters.daemon import AdapterDaemon
        from carrierpay.adapters.reconciler import Reconciler
        from carrierpay.adapters.registry import connector_factory
        from carrierpay.webhooks import DestinationPolicy
        from carrierpay.webhooks import run as run_webhooks

        callbacks = await self._stack.enter_async_context(CallbackServer(self.db.url, secrets=SECRETS))
        factory = connector_factory(secrets=SECRETS, callback_base=callbacks.base_url)
        # Two adapter daemons: they share the queue (SKIP LOCKED claims) and complete on two connections.
        for n in (1, 2):
            adapters = AdapterDaemon(self.db.url, factory, batch=250, lease=timedelta(minutes=5), poll_interval=0.05,
                                     worker=f"demo-adapter-{n}")
            self.tasks.append(asyncio.ensure_future(adapters.run(self.stop)))
        self.reconciler = Reconciler(self.db.url, factory, interval=0.2, batch=500)
        self.tasks.append(asyncio.ensure_future(self.reconciler.run(self.stop)))
        # The receiver listens on loopback over http, which the dispatcher refuses unless told: allow exactly it.
        receiver = DestinationPolicy(allow_networks=(ip_network("127.0.0.1/32"),), allow_http=True)
        # The HTTP merchant's sink is https with a certificate made for this run: trusted here, explicitly.
        import ssl

        trusted = ssl.create_default_context(cafile=str(self.sink_cert))
        self.tasks.append(asyncio.ensure_future(run_webhooks(self.db.url, policy=receiver, interval=0.2, batch=500,
                                                             stop=self.stop, ssl_context=trusted)))
        await self.start_dashboard()
        self._shipper = self._processes.Process(
            target=ship_history, name="history-shipper", daemon=True,
            args=(self.db.url, self.db.history_url, self.logfile, self._shipper_stop, self._shipper_errors))
        self._shipper.start()

    async def start_dashboard(self) -> None:
        """The live page, logged in to as a read-only reporter made for this run (a port already taken
        gives way to any free one)."""
        import secrets

        from psycopg import sql

        from carrierpay.dashboard import serve

        password = secrets.token_urlsafe(12)
        await self.q(queries.DEMO_DROP_VIEWER)
        await self.conn.execute(sql.SQL(queries.DEMO_CREATE_VIEWER).format(password=sql.Literal(password)))
        ready = asyncio.get_running_loop().create_future()
        for port in dict.fromkeys((self.options.dashboard_port, 0)):
            task = asyncio.ensure_future(serve(self.db.url, port=port, refresh_s=2.0, stop=self.stop,
                                               started=lambda bound: ready.done() or ready.set_result(bound)))
            done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            if ready in done:
                self.tasks.append(task)
                self.dashboard = (f"http://127.0.0.1:{ready.result()}/", queries.DEMO_VIEWER, password)
                return
            log.warning("dashboard not served on port %s: %s", port, task.exception())

    async def close(self) -> None:
        await stop_tasks(self.stop, self.tasks, grace_s=10)
        self.tasks.clear()
        self.stop_shipper()
        await self._stack.aclose()

    def stop_shipper(self) -> None:
        if self._shipper is None:
            return
        self._shipper_stop.set()
        self._shipper.join(timeout=120)
        if self._shipper.is_alive():
            self._shipper.terminate()
            self._shipper.join()
            self.shipper_error = "the history shipper did not finish within 120 s"
        elif not self._shipper_errors.empty():
            self.shipper_error = self._shipper_errors.get()
        elif self._shipper.exitcode != 0:
            self.shipper_error = f"the history shipper exited with code {self._shipper.exitcode}"
        self._shipper = None

    # ------------------------------------------------------------------ time

    async def advance(self, delta: timedelta) -> None:
        """Move the business clock and every simulator's clock together."""
        self.clock.advance(delta)
        await self.q(queries.ADVANCE_CLOCK, {"by": delta})

    async def settle(self, timeout: float = SETTLE_TIMEOUT_S) -> None:
        """Wait until the daemons have done everything due at the current business time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        t0 = loop.time()
        try:
            await self._settle(deadline, timeout)
        finally:
            log.debug("settle took %.2fs", loop.time() - t0)

    async def _settle(self, deadline: float, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        while await self.work_due():
            if loop.time() > deadline:
                self.stats.settle_timeouts += 1
                log.warning("work still open after %.0fs at %s; moving on", timeout, self.clock.now())
                return
            await asyncio.sleep(0.03)

    async def tick_scheduler(self) -> None:
        from carrierpay.scheduler import tick

        try:
            await tick(self.conn, batch=5000)
        except psycopg.Error as exc:  # reported as a failed check; the week goes on
            message = str(exc).strip().splitlines()[0]
            detail = getattr(exc.diag, "message_detail", None)
            self.stats.scheduler_errors[message + (f" ({detail})" if detail else "")] += 1
            log.error("scheduler tick failed at %s: %s", self.clock.now(), exc)

    # ------------------------------------------------------------------ what users do

    def read_pins(self) -> None:
        """Read the texts each simulated handset received since last time; keep the PINs."""
        for code, sim in self.sims.items():
            texts = sim.texts[self.text_positions[code]:]
            self.text_positions[code] += len(texts)
            for message in texts:
                found = PIN_TEXT.search(message.text)
                if found:
                    self.pins[message.msisdn] = found.group(1)

    async def confirm(self, merchants: list[str], optin_ids: list[int], pins: list[str]) -> list[dict]:
        return await self.batched(queries.DEMO_TRY_CONFIRM, [merchants, optin_ids, pins])

    async def confirm_people(self, people: list[Person], optin_ids: list[int], pins: list[str]) -> list[dict]:
        """Each answers the PIN on their merchant's side: SQL in batches, or POST /consents/{id}/validate."""
        over_sql = [i for i, p in enumerate(people) if p.merchant.code != HTTP_MERCHANT]
        over_http = [i for i, p in enumerate(people) if p.merchant.code == HTTP_MERCHANT]
        documents = await self.confirm([people[i].merchant.code for i in over_sql], [optin_ids[i] for i in over_sql],
                                       [pins[i] for i in over_sql]) if over_sql else []
        answers = await self.http.many("POST", [(f"/carrierpay/v1/consents/{optin_ids[i]}/validate",
                                                 {"code": pins[i]}) for i in over_http])
        return documents + [document if status == 200 else {"error": document.get("code")}
                            for status, document in answers]

    async def sign_up(self, cohort: int) -> None:
        people = [p for p in self.people if p.cohort == cohort]
        if not people:
            return
        over_sql = [p for p in people if p.merchant.code != HTTP_MERCHANT]
        over_http = [p for p in people if p.merchant.code == HTTP_MERCHANT]
        documents = await self.batched(
            queries.DEMO_TRY_SUBSCRIBE,
            [[p.merchant.code for p in over_sql], [p.msisdn for p in over_sql],
             [p.merchant.subscription for p in over_sql], [p.merchant.plan for p in over_sql],
             [self.key("sub") for _ in over_sql]]) if over_sql else []
        for person, document in zip(over_sql, documents, strict=True):
            if "error" in document:
                self.stats.subscribe_errors[document["error"]] += 1
                continue
            person.subscription_id = document["id"]
            person.optin_id = document.get("optin_id")
        answers = await self.http.many("POST", [("/carrierpay/v1/subscriptions", {
            "phoneNumber": p.msisdn, "productId": p.merchant.subscription, "plan": p.merchant.plan,
            "clientCorrelator": self.key("sub")}) for p in over_http])
        for person, (status, document) in zip(over_http, answers, strict=True):
            if status != 201:
                self.stats.subscribe_errors[f"HTTP {status} {document.get('code')}"] += 1
                continue
            person.subscription_id = int(document["subscriptionId"])
            authorization = (document.get("validationInfo") or {}).get("authorizationId")
            person.optin_id = int(authorization) if authorization else None
        await self.settle()  # the PIN texts go out through the adapters
        self.read_pins()
        answering = [p for p in people if p.optin_id and p.confirms and p.msisdn in self.pins]
        self.stats.never_confirmed += sum(1 for p in people if p.optin_id and not p.confirms)
        wrong = [p for p in answering if p.wrong_pin_first]
        if wrong:
            await self.confirm_people(wrong, [p.optin_id for p in wrong],
                                      [wrong_pin(self.pins[p.msisdn]) for p in wrong])
            self.stats.wrong_pins += len(wrong)
        documents = await self.confirm_people(answering, [p.optin_id for p in answering],
                                              [self.pins[p.msisdn] for p in answering])
        self.stats.confirmed += sum(1 for d in documents if d.get("status") == "confirmed")

    async def buy(self, count: int) -> None:
        """One-time purchases by subscribers; where the carrier's regulation wants it (optin_one_time,
        as GB's does) with a PIN first."""
        candidates = [p for p in self.people if p.subscription_id and p.merchant.code != HTTP_MERCHANT]
        buyers = self.rng.sample(candidates, min(count, len(candidates)))
        needs_optin = [p for p in buyers if p.market.carrier in self.one_time_optin]
        for person in needs_optin:
            self.pins.pop(person.msisdn, None)  # only the PIN of this purchase will do
        metadata: dict[str, dict] = {}
        if needs_optin:
            documents = await self.batched(
                queries.DEMO_TRY_REQUEST_OPTIN,
                [[p.merchant.code for p in needs_optin], [p.msisdn for p in needs_optin],
                 [p.merchant.one_time for p in needs_optin], [self.key("optin") for _ in needs_optin]])
            await self.settle()
            self.read_pins()
            asked = [(p, d["id"]) for p, d in zip(needs_optin, documents, strict=True)
                     if "error" not in d and p.msisdn in self.pins]
            confirmed = await self.confirm([p.merchant.code for p, _ in asked], [o for _, o in asked],
                                           [self.pins[p.msisdn] for p, _ in asked])
            for (person, optin_id), document in zip(asked, confirmed, strict=True):
                if document.get("status") == "confirmed":
                    metadata[person.msisdn] = {"optin_id": optin_id}
        documents = await self.batched(
            queries.DEMO_TRY_CHARGE,
            [[p.merchant.code for p in buyers], [p.msisdn for p in buyers], [p.merchant.one_time for p in buyers],
             [self.key("buy") for _ in buyers], [Jsonb(metadata.get(p.msisdn, {})) for p in buyers]]) if buyers else []
        self.stats.purchases += succeeded(documents, self.stats.purchase_errors)
        await self.buy_over_http(count)

    async def buy_over_http(self, count: int) -> None:
        """The HTTP merchant's purchases: createPayment, its outcome posted to the merchant's sink. Where
        the regulation wants a PIN per purchase (GB), the merchant sells over HTTP only after the
        two steps, which it does not do here: those subscribers are not offered one."""
        candidates = [p for p in self.people if p.subscription_id and p.merchant.code == HTTP_MERCHANT
                      and p.market.carrier not in self.one_time_optin]
        buyers = self.rng.sample(candidates, min(count, len(candidates)))
        requests = []
        for person in buyers:
            key = self.key("http-buy")
            price = person.market.prices[person.merchant.one_time][0]
            requests.append(("/carrier-billing/v0.5/payments", {
                "amountTransaction": {
                    "phoneNumber": person.msisdn, "clientCorrelator": key, "referenceCode": key,
                    "paymentAmount": {"chargingInformation": {
                        "amount": Decimal(major(price, self.exponents[person.market.currency])),
                        "currency": person.market.currency, "description": person.merchant.one_time_name}}},
                **self.http.sink_fields()}))
        payments = created(await self.http.many("POST", requests), self.stats.purchase_errors)
        self.stats.purchases += payments
        self.stats.http_payments += payments

    async def cancel_some(self, count: int) -> None:
        candidates = [p for p in self.people if p.subscription_id]
        chosen = self.rng.sample(candidates, min(count, len(candidates)))
        over_sql = [p for p in chosen if p.merchant.code != HTTP_MERCHANT]
        documents = await self.batched(
            queries.DEMO_TRY_CANCEL,
            [[p.merchant.code for p in over_sql], [p.subscription_id for p in over_sql]]) if over_sql else []
        self.stats.cancellations += sum(1 for d in documents if "error" not in d)
        answers = await self.http.many("POST", [(f"/carrierpay/v1/subscriptions/{p.subscription_id}/cancel", {})
                                                for p in chosen if p.merchant.code == HTTP_MERCHANT])
        self.stats.cancellations += sum(1 for status, _ in answers if status == 200)

    async def refund_some(self, count: int) -> None:
        """The merchants' support desks refund a few recent payments they were told about: by webhook
        (the SQL merchant), or at its sink (the HTTP merchant, through createRefund)."""
        recent = [paid for paid in self.receiver.paid if paid[0] != HTTP_MERCHANT][-max(count * 20, 1):]
        chosen = self.rng.sample(recent, min(count, len(recent)))
        documents = await self.batched(
            queries.DEMO_TRY_REFUND,
            [[m for m, _, _ in chosen], [p for _, p, _ in chosen], [self.key("refund") for _ in chosen]]
        ) if chosen else []
        self.stats.refunds += succeeded(documents, self.stats.refund_errors)
        refundable = [p for p in self.sink.paid if p not in self.http_refunded][-max(count * 20, 1):]
        chosen_ids = self.rng.sample(refundable, min(max(1, count // 2), len(refundable)))
        requests = []
        for payment_id in chosen_ids:
            key = self.key("http-refund")
            self.http_refunded.add(payment_id)
            requests.append((f"/carrier-billing-refund/v0.3/payments/{payment_id}/refunds", {
                "type": "total", "reason": "support desk",
                "amountTransaction": {"clientCorrelator": key, "referenceCode": key, "refundAmount": {}},
                **self.http.sink_fields()}))
        refunds = created(await self.http.many("POST", requests), self.stats.refund_errors)
        self.stats.refunds += refunds
        self.stats.http_refunds += refunds

    # ------------------------------------------------------------------ the week

    async def run_week(self, progress: Callable[[int, int, int], None],
                       signed_up: Callable[[int, int], None] = lambda done, confirmed: None) -> None:
        hours = self.options.days * 24
        per_day = max(1, self.options.subscribers // 100)
        for hour in range(hours):
            began = time.monotonic()
            if hour:
                await self.advance(timedelta(hours=1))
            await self.tick_scheduler()
            if hour < SIGNUP_HOURS:
                await self.sign_up(hour)
                signed_up(sum(1 for p in self.people if p.cohort <= hour), self.stats.confirmed)
            of_day = hour % 24
            if of_day in (2, 6):  # 10:00 and 14:00 UTC: every carrier's charging hours are open
                await self.buy(max(1, self.options.subscribers // 250))
            if of_day == 4 and hour >= 24:
                await self.cancel_some(max(1, per_day // 2))
            if of_day == 5:
                await self.refund_some(max(1, per_day // 3))
            await self.settle()
            collected, attempted = await self.charges_collected()
            log.info("hour %d (%s) took %.2fs; charges collected %d of %d", hour, self.clock.now(),
                     time.monotonic() - began, collected, attempted)
            progress(hour + 1, collected, attempted)

    async def finish(self) -> None:
        """Let everything in flight settle: callbacks, result files (a batch operator publishes
        an hour later), reconciliation. The business clock moves on in half hours, no new renewals,
        for at most six hours; a charge whose outcome is unknown also waits out the carrier's timeout
        in real time before the reconciler may ask about it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_TIMEOUT_S * 2
        while loop.time() < deadline:
            await self.settle()
            if not await self.open_calls():
                break
            if self.stats.settling_hours < 6:
                await self.advance(timedelta(minutes=30))
                self.stats.settling_hours += 0.5
            else:
                await asyncio.sleep(0.5)
        await self.settle()
        # The merchants' webhooks: wait until none is left to deliver now.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while loop.time() < deadline and await self.notifications_due():
            await asyncio.sleep(0.1)

    async def work_due(self) -> int:
        return await self.one(queries.DEMO_WORK_DUE, {"callback_carriers": self.callback_carriers})

    async def charges_collected(self) -> tuple[int, int]:
        return (await self.q(queries.DEMO_CHARGES_COLLECTED))[0]

    async def open_calls(self) -> int:
        return await self.one(queries.DEMO_OPEN_CALLS)

    async def notifications_due(self) -> int:
        return await self.one(queries.DEMO_NOTIFICATIONS_DUE)

    # ------------------------------------------------------------------ report and checks

    async def report(self) -> dict[str, Any]:
        rows, receivable = await self.carrier_rows(self.conn)
        checks: dict[str, dict[str, Any]] = {"scheduler_ticks_clean": self.scheduler_check()}
        checks.update(await self.database_checks(self.conn))
        checks["carrier_ledgers_agree"] = self.ledgers_check(
            rows, receivable, lambda carrier: (self.sims[carrier].ledger.charged_total(),
                                               self.sims[carrier].ledger.refunded_total()))
        checks["webhooks_delivered"] = await self.webhooks_check(self.conn)
        checks["http_merchant_served"] = self.http_check()
        self.stop_shipper()
        checks["history_shipped"] = self.history_check(await self._one(self.conn, queries.DEMO_HISTORY_UNSHIPPED))
        return {"database": DEMO_DATABASE, "url": redact_url(self.db.url),
                "history_url": redact_url(self.db.history_url),
                "business_clock": (await self.one(queries.CLOCK_NOW)).isoformat(),
                "carriers": rows, "checks": checks, "totals": self.totals(rows), "http": self.http_summary(),
                "ok": all(check["ok"] for check in checks.values())}

    @staticmethod
    async def _one(conn: psycopg.AsyncConnection, sql: str, params: Any = None) -> Any:
        row = await (await conn.execute(sql, params)).fetchone()
        return row[0] if row else None

    async def carrier_rows(self, conn: psycopg.AsyncConnection) -> tuple[list[dict], dict[str, int]]:
        """One database's report.carrier_summary (each row with its currency's exponent) and its carrier
        receivable per carrier."""
        # report.carrier_summary counts final payments from the rollup: fold what settled since the last tick.
        while await self._one(conn, queries.FOLD_ROLLUPS_ALL):
            pass
        cur = await conn.execute(queries.DEMO_CARRIER_SUMMARY)
        columns = [c.name for c in cur.description]
        rows = [dict(zip(columns, row, strict=True)) for row in await cur.fetchall()]
        exponents = await currency_exponents(conn, [row["currency"] for row in rows])
        for row in rows:
            row["currency_exponent"] = exponents[row["currency"]]
        receivable = dict(await (await conn.execute(queries.DEMO_RECEIVABLES)).fetchall())
        return rows, receivable

    def scheduler_check(self) -> dict[str, Any]:
        errors = self.stats.scheduler_errors
        return {"ok": not errors,
                "detail": "every hourly tick ran" if not errors else
                "; ".join(f"{count} tick(s) failed: {message}" for message, count in errors.items())}

    async def database_checks(self, conn: psycopg.AsyncConnection) -> dict[str, dict[str, Any]]:
        """The checks one database answers by itself: balanced journals, nothing stuck."""
        checks: dict[str, dict[str, Any]] = {}
        unbalanced = await self._one(conn, queries.DEMO_UNBALANCED_JOURNALS)
        checks["journals_balanced"] = {"ok": unbalanced == 0, "detail": f"{unbalanced} unbalanced journal(s)"}
        open_rows = await (await conn.execute(queries.DEMO_OPEN_PROCEDURES)).fetchall()
        stuck = Counter()
        deferred = Counter()
        for kind, status, is_deferred, count in open_rows:
            (deferred if is_deferred else stuck)[f"{kind}/{status}"] += count
        checks["procedures_final_or_deferred"] = {
            "ok": not stuck,
            "detail": (f"{sum(deferred.values())} open but legitimately deferred ({dict(deferred)})" if deferred
                       else "every procedure is final") + (f"; STUCK: {dict(stuck)}" if stuck else "")}
        return checks

    @staticmethod
    def ledgers_check(rows: list[dict], receivable: dict[str, int],
                      ledger: Callable[[str], tuple[int, int]]) -> dict[str, Any]:
        """Our receivable, collected and refunded money per carrier against the carrier's own ledger
        (`ledger(carrier)`: what it charged and refunded); each row gets the carrier's figures."""
        ledgers_ok = True
        for row in rows:
            row["simulator_charged_minor"], row["simulator_refunded_minor"] = ledger(row["carrier"])
            row["receivable_minor"] = int(receivable.get(row["carrier"], 0))
            row["ledger_agrees"] = (
                row["receivable_minor"] == row["simulator_charged_minor"] - row["simulator_refunded_minor"]
                and row["collected_minor"] == row["simulator_charged_minor"]
                and row["refunded_minor"] == row["simulator_refunded_minor"])
            ledgers_ok = ledgers_ok and row["ledger_agrees"]
        return {
            "ok": ledgers_ok,
            "detail": "; ".join(
                "{}: ours {}, carrier's {}".format(
                    r["carrier"], money(r["receivable_minor"], r["currency"], r["currency_exponent"]),
                    money(r["simulator_charged_minor"] - r["simulator_refunded_minor"], r["currency"],
                          r["currency_exponent"]))
                for r in rows)}

    async def webhooks_check(self, conn: psycopg.AsyncConnection) -> dict[str, Any]:
        notifications = dict(await (await conn.execute(queries.DEMO_NOTIFICATIONS)).fetchall())
        pending = notifications.get("pending", 0)
        failed = notifications.get("failed", 0)
        return {
            "ok": failed == 0 and pending == 0 and self.receiver.bad_signatures == 0,
            "detail": f"{notifications.get('delivered', 0)} delivered, {pending} pending, {failed} failed; "
                      f"{self.receiver.bad_signatures} bad signature(s), {self.receiver.duplicates} duplicate(s)"}

    def http_check(self) -> dict[str, Any]:
        server_errors = sum(n for status, n in self.http.requests.items() if status.startswith("5"))
        return {
            "ok": server_errors == 0 and self.sink.unauthorized == 0,
            "detail": f"{sum(self.http.requests.values())} requests ({server_errors} server errors), "
                      f"{self.http.tokens} token(s); its sink got {sum(self.sink.kinds.values())} notification(s), "
                      f"{self.sink.unauthorized} without its credential, {self.sink.duplicates} duplicate(s)"}

    def history_check(self, lag: int) -> dict[str, Any]:
        return {"ok": lag == 0 and self.shipper_error is None,
                "detail": f"{lag} row(s) not shipped" + (f"; shipper error: {self.shipper_error}"
                                                         if self.shipper_error else "")}

    def totals(self, rows: list[dict]) -> dict[str, Any]:
        return {
            "subscribers": self.options.subscribers,
            "subscriptions": sum(r["subscriptions"] for r in rows),
            "confirmed_optins": self.stats.confirmed,
            "never_confirmed": self.stats.never_confirmed,
            "wrong_pins": self.stats.wrong_pins,
            "purchases": self.stats.purchases,
            "purchase_refusals": dict(self.stats.purchase_errors),
            "subscribe_refusals": dict(self.stats.subscribe_errors),
            "refunds_requested": self.stats.refunds,
            "refund_refusals": dict(self.stats.refund_errors),
            "cancellations": self.stats.cancellations,
            "charges_attempted": sum(r["charges_attempted"] for r in rows),
            "charges_collected": sum(r["charges_collected"] for r in rows),
            "webhooks": dict(self.receiver.kinds),
            "settle_timeouts": self.stats.settle_timeouts,
            "settling_hours": self.stats.settling_hours,
            "sms_delivered": sum(len(sim.texts) for sim in self.sims.values()),
        }

    def http_summary(self) -> dict[str, Any]:
        return {
            "merchant": HTTP_MERCHANT,
            "requests": dict(self.http.requests),  # HTTP status -> count
            "tokens": self.http.tokens,
            "payments_created": self.stats.http_payments,
            "payments_succeeded": len(self.sink.paid),
            "refunds_created": self.stats.http_refunds,
            "sink_notifications": dict(self.sink.kinds),
        }

    def data_location(self) -> str:
        where = (f"data: database {DEMO_DATABASE} ({redact_url(self.db.url)}); "
                 f"history store {DEMO_HISTORY_DATABASE}")
        if self.db.cluster is not None:
            where += f"; cluster {self.db.cluster.datadir}"
        return where

    async def hold(self) -> None:
        """--keep: the simulators and daemons keep running (the scheduler on a real-time tick) until
        Ctrl-C or SIGTERM, so charges made by hand settle."""
        from carrierpay.lifecycle import install_stop_handlers
        from carrierpay.scheduler import run as run_scheduler

        held = asyncio.Event()
        install_stop_handlers(held)
        # Time stands where the run ended: the report the user just read stays true until they
        # move the clock themselves (admin.advance_clock).
        await self.q(queries.HOLD_CLOCK, {"hold": True})
        scheduler = asyncio.ensure_future(run_scheduler(self.db.url, interval=1.0, stop=held))
        await held.wait()
        await scheduler
        await self.close()
        kept = ("PostgreSQL keeps running (carrierpay db down stops it)" if self.db.cluster is not None
                else "the configured server keeps it")
        self.console.print(f"stopped the carrier simulators, adapters, reconciler, callback server, webhook "
                           f"dispatcher, API server, dashboard and scheduler; the database {DEMO_DATABASE} stays "
                           f"and {kept}",
                           soft_wrap=True)


# --------------------------------------------------------------------------- printing


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def print_report(console: Any, summary: dict[str, Any]) -> None:
    from carrierpay.cli.common import print_rows

    rows = summary["carriers"]
    print_rows(
        ["carrier", "country", "charges", "collected", "success", "refunds", "currency", "revenue", "refunded", "net"],
        [(row["carrier"], row["country"], f"{row['charges_attempted']:,}", f"{row['charges_collected']:,}",
          f"{row['success_pct'] or 0}%", f"{row['refunds_succeeded']}/{row['refunds']}", row["currency"],
          amount(row["collected_minor"], row["currency_exponent"]),
          amount(row["refunded_minor"], row["currency_exponent"]), amount(row["net_minor"], row["currency_exponent"]))
         for row in rows],
        title="charges and money per carrier (major units; refunds succeeded/asked)", out=console)
    console.print()
    print_rows(
        ["carrier", "renewals", "renewal success", "retries per success", "step-downs", "active",
         "retrying or grace", "suspended", "cancelled", "never opted in"],
        [(row["carrier"], f"{row['renewal_attempts']:,}", f"{row['renewal_success_pct'] or 0}%",
          str(row["retries_per_success"] or 0), f"{row['step_downs']:,}", f"{row['active']:,}",
          f"{row['in_retry_or_grace']:,}", f"{row['suspended']:,}", f"{row['cancelled']:,}",
          f"{row['pending_optin']:,}") for row in rows],
        title="subscriptions per carrier", out=console)
    totals = summary["totals"]
    console.print(
        f"subscribers {totals['subscribers']:,}; subscriptions {totals['subscriptions']:,} "
        f"(opt-ins confirmed {totals['confirmed_optins']:,}, never confirmed {totals['never_confirmed']:,}, "
        f"a wrong PIN first {totals['wrong_pins']:,}); one-time purchases {totals['purchases']:,}; "
        f"refunds asked {totals['refunds_requested']:,}; cancelled by users {totals['cancellations']:,}; "
        f"SMS delivered {totals['sms_delivered']:,}; webhooks {sum(totals['webhooks'].values()):,}")
    if totals["purchase_refusals"] or totals["refund_refusals"] or totals["subscribe_refusals"]:
        console.print(f"[dim]refused by the rules (SQLSTATE: count): purchases {totals['purchase_refusals']}, "
                      f"refunds {totals['refund_refusals']}, sign-ups {totals['subscribe_refusals']}[/]")
    http = summary.get("http")  # absent from a summary of a run without the HTTP merchant
    if http:
        console.print(
            f"{http['merchant']} over the HTTP API: {sum(http['requests'].values()):,} requests "
            f"({', '.join(f'{n:,} × {status}' for status, n in sorted(http['requests'].items()))}), "
            f"{http['tokens']} token(s); payments created {http['payments_created']:,}, succeeded "
            f"{http['payments_succeeded']:,}; refunds created {http['refunds_created']:,}; notifications at its sink "
            f"{sum(http['sink_notifications'].values()):,}", soft_wrap=True)
    console.print("\n[bold]checks[/]")
    for name, check in summary["checks"].items():
        mark = "[green]✓[/]" if check["ok"] else "[bold red]✗[/]"
        console.print(f" {mark} {name.replace('_', ' ')}: {check['detail']}")


def keep_instructions(database: DemoDatabase, business_clock: str) -> str:
    return f"""
The demo database stays up. In another terminal:

  export CARRIERPAY_DATABASE_URL="$(carrierpay db url --database {DEMO_DATABASE})"
  psql "$CARRIERPAY_DATABASE_URL"

and try, in psql (the business clock is held where the run ended, {business_clock}, so the report
stays as printed until you move it: select admin.advance_clock('1 day'); the simulators and daemons
of this demo keep running until you press Ctrl-C here, so what you start settles):

  select * from report.carrier_summary;
  select api.charge('pixelforge', '+2348035550001', 'gems', 'by-hand-1') ->> 'id' as payment \\gset
  select api.payment('pixelforge', :payment);          -- pending at first, then settled
  select * from report.ledger_balances order by 1, 2;

or `carrierpay report revenue`, `carrierpay report all`; the dashboard printed above shows the
simulated days (pick 7 days). Ctrl-C stops the simulators and daemons; the
database keeps running until `carrierpay db down`.
"""


async def run_demo(options: DemoOptions, console: Any) -> dict[str, Any]:

    began = time.monotonic()
    home = config.home()
    home.mkdir(parents=True, exist_ok=True)
    logfile = home / "demo.log"
    handler = logging.FileHandler(logfile, mode="w")
    handler.setFormatter(MaskingFormatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    say = console.print
    if options.shards:
        from carrierpay.demo_shards import run_sharded_demo

        return await run_sharded_demo(options, console, logfile, handler, began)
    database = await asyncio.to_thread(prepare_database, options.database_url, say)
    try:
        return await _run_prepared_demo(options, database, console, logfile, handler, began)
    finally:
        # Whatever ended the run (its end, a failure, Ctrl-C), what the demo started it stops.
        if database.cluster is not None and database.started_cluster and not options.keep:
            database.cluster.stop()
            say("stopped the embedded PostgreSQL (the data stays: `carrierpay db up` and "
                f"`carrierpay db url --database {DEMO_DATABASE}`); keep it running next time with --keep")


async def _run_prepared_demo(options: DemoOptions, database: DemoDatabase, console: Any, logfile: Path,
                             handler: logging.Handler, began: float, demo: Demo | None = None) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    say = console.print
    root = logging.getLogger()
    demo = demo or Demo(options, database, console, logfile)
    summary: dict[str, Any] = {}
    try:
        await demo.start()
        if demo.dashboard:
            say(f"dashboard: {demo.dashboard[0]} (log in as {demo.dashboard[1]}, password {demo.dashboard[2]}); "
                "it updates itself as the simulated days go by", soft_wrap=True)
        say(f"4 carrier simulators on 127.0.0.1 (GB OneAPI, ZA ParlayX, NG aggregator with callbacks, IN batch "
            f"files); throughput raised from the specs' 10-40/s to {DEMO_TPS}/s in the demo's copies")
        say(f"{options.subscribers:,} subscribers, 2 merchants, {options.days} simulated days from "
            f"{START:%a %d %b %Y %H:%M} UTC (seed {options.seed}); daemon log: {logfile}")
        hours = options.days * 24
        # One bar per phase: sign-ups (the first hours, the slowest part of a run), the simulated
        # days hour by hour, then settling what is still in flight.
        with Progress(TextColumn("[bold]{task.description:<24}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                      TimeElapsedColumn(), console=console, transient=False) as bar:
            signups = bar.add_task("sign-ups", total=options.subscribers, detail="")
            week = bar.add_task(f"{options.days} days, day 1 08:00", total=hours, detail="")

            def signed_up(done: int, confirmed: int) -> None:
                bar.update(signups, completed=done, detail=f"opt-ins confirmed {confirmed:,}")

            def progress(done: int, collected: int, attempted: int) -> None:
                now = START + timedelta(hours=done)
                bar.update(week, completed=done,
                           description=f"{options.days} days, day {(now - START).days + 1} {now:%H:%M}",
                           detail=f"charges collected {collected:,} of {attempted:,}")

            await demo.run_week(progress, signed_up)
            settling = bar.add_task("settling in-flight calls", total=None,
                                    detail="callbacks, result files, reconciliation")
            await demo.finish()
            bar.update(settling, total=1, completed=1, detail="done")
        summary = await demo.report()
        summary["elapsed_s"] = round(time.monotonic() - began, 1)
        summary["options"] = {"subscribers": options.subscribers, "days": options.days, "seed": options.seed}
        print_report(console, summary)
        if options.summary:
            options.summary.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
        say(f"\nfinished in {summary['elapsed_s']}s; "
            + ("[green]all checks passed[/]" if summary["ok"] else "[bold red]some checks FAILED[/]"))
        where = demo.data_location() + f"; daemon log {logfile}"
        if options.summary:
            where += f"; summary {options.summary}"
        say(where)
        if options.keep:
            say(keep_instructions(database, summary["business_clock"]))
            await demo.hold()
    finally:
        await demo.close()
        root.removeHandler(handler)
        handler.close()
    return summary
