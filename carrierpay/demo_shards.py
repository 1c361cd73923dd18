"""`carrierpay demo --shards N`: the demo over a front and N partitions (docs/sharding.md).

The same phases, people, simulators and checks as the single-node demo (carrierpay/demo.py), laid
out as a sharded deployment is:

* a front and N partitions, each its own embedded PostgreSQL cluster (as `carrierpay db up --shards N`
  builds them), under $CARRIERPAY_HOME/demo-shards, recreated on every run;
* configuration (carriers, merchants, products, price points, the business clock) through the front's
  two-phase `admin` calls, so every partition holds the same;
* the SQL merchant's calls (`api.subscribe`, `api.confirm_optin`, `api.charge`, `api.refund`, ...) on
  the front, which routes each to the partition that owns the number or the id;
* one group of daemons per partition (adapter daemon, reconciler, callback server, webhook
  dispatcher, history shipper into a history database on that partition's cluster; the scheduler is
  ticked on each partition), all against the same four carrier simulators;
* the HTTP merchant's API is served per partition (its sessions and tokens live in a partition's
  database, so its paged lists hold that partition's rows): one API server per
  partition, with its own API client, and the merchant's backend sends each request to the server of
  the partition that owns it (the number's hash, or the id's partition bits), as a load balancer in
  front of them would.

The checks run on every partition (journals balanced, nothing stuck, each carrier's receivable
against what the simulator charged the numbers that partition owns, webhooks delivered, history
shipped), then in total (every carrier's receivable over the partitions against its simulator's
whole ledger). The live dashboard and --keep are single-node only.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from carrierpay import config, queries
from carrierpay.db import redact_url
from carrierpay.demo import (
    DEMO_HISTORY_DATABASE,
    DEMO_TIMEOUT_S,
    DEMO_TPS,
    HTTP_MERCHANT,
    MARKETS,
    MERCHANTS,
    VARIANTS,
    Demo,
    DemoDatabase,
    DemoOptions,
    _replace_database,
    _run_prepared_demo,
    currency_exponents,
    ship_history,
)
from carrierpay.migrate import PARTITION_ID_BITS
from carrierpay.simulators.fleet import SECRETS, spec_for

# An id in a request path of the HTTP API (consents, subscriptions, payments) names its partition.
PATH_ID = re.compile(r"/(\d+)(?:/|$)")


@dataclass
class ShardedDemoDatabase(DemoDatabase):
    """The front (`url`) and the partitions; each partition's history store is on its own cluster."""

    shard_urls: list[str] = field(default_factory=list)
    history_urls: list[str] = field(default_factory=list)
    home: Path | None = None


def prepare_sharded(partitions: int, say: Any) -> ShardedDemoDatabase:
    """A fresh front and partitions under $CARRIERPAY_HOME/demo-shards, and a history database on each
    partition's cluster."""
    from carrierpay.shards import local

    home = config.home() / "demo-shards"
    if home.exists():
        local.down(home)
        shutil.rmtree(home)
    home.mkdir(parents=True)
    home.chmod(0o755)  # the postgres user must reach it when we are root
    # A throwaway deployment, recreated every run: fsync off, as the benchmark's.
    front_url, shard_urls = local.up(home, partitions, say=say, fast=True)
    history_urls = []
    for url in shard_urls:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'create database "{DEMO_HISTORY_DATABASE}" template template0 encoding utf8')
            for statement in queries.DEMO_SHARD_SETTINGS:
                conn.execute(sql.SQL(statement).format(sql.Identifier(config.DATABASE_NAME)))
        history_urls.append(_replace_database(url, DEMO_HISTORY_DATABASE))
    say(f"a front and {partitions} partitions, each its own PostgreSQL cluster, under {home}")
    return ShardedDemoDatabase(url=front_url, history_url="", admin_url=front_url, cluster=None,
                               started_cluster=False, shard_urls=shard_urls, history_urls=history_urls, home=home)


class PartitionedHttp:
    """The HTTP merchant's backend over one API server per partition: each request goes to the server
    of the partition that owns its id or number; answers come back in the order asked."""

    def __init__(self, backends: list[Any], partition_of_number: dict[str, int]) -> None:
        self.backends = backends
        self.partition_of_number = partition_of_number

    @property
    def requests(self) -> Counter:
        return sum((backend.requests for backend in self.backends), Counter())

    @property
    def tokens(self) -> int:
        return sum(backend.tokens for backend in self.backends)

    def sink_fields(self) -> dict[str, Any]:
        return self.backends[0].sink_fields()

    def partition(self, path: str, body: dict | None) -> int:
        found = PATH_ID.search(path)
        if found:
            return int(found.group(1)) >> PARTITION_ID_BITS
        body = body or {}
        number = body.get("phoneNumber") or (body.get("amountTransaction") or {}).get("phoneNumber")
        return self.partition_of_number[digits(number)]

    async def many(self, method: str, requests: list[tuple[str, dict | None]]) -> list[tuple[int, Any]]:
        routed: dict[int, list[int]] = {}
        for i, (path, body) in enumerate(requests):
            routed.setdefault(self.partition(path, body), []).append(i)
        answers: list[Any] = [None] * len(requests)

        async def send(partition: int, indexes: list[int]) -> None:
            results = await self.backends[partition].many(method, [requests[i] for i in indexes])
            for i, result in zip(indexes, results, strict=True):
                answers[i] = result

        await asyncio.gather(*(send(partition, indexes) for partition, indexes in routed.items()))
        return answers


def digits(number: str) -> str:
    """A number as the simulators and the demo both spell it, whatever its prefix (+, tel:)."""
    return re.sub(r"\D", "", number)


class ShardedDemo(Demo):
    db: ShardedDemoDatabase

    def __init__(self, options: DemoOptions, database: ShardedDemoDatabase, console: Any,
                 logfile: Path | None = None) -> None:
        super().__init__(options, database, console, logfile)
        self.shard_conns: list[psycopg.AsyncConnection] = []
        self.partition_of_number: dict[str, int] = {}
        self.shippers: list[Any] = []
        self.shipper_errors: list[str] = []

    async def admin(self, function: str, **arguments: Any) -> Any:
        """A configuration call on every partition, through the front's two-phase commit."""
        from carrierpay.shards.fanout import apply_admin

        return await asyncio.to_thread(apply_admin, self.db.url, function, arguments)

    async def each(self, sql: str, params: Any = None) -> list[Any]:
        """The first column of the first row of `sql` on every partition, in partition order."""
        return [await self._one(conn, sql, params) for conn in self.shard_conns]

    # ------------------------------------------------------------------ setup

    async def start(self) -> None:
        await self.open_world()
        for url in self.db.shard_urls:
            conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
            self._stack.push_async_callback(conn.close)
            self.shard_conns.append(conn)
        await self.admin("set_clock", p_at=self.clock.now())
        for market in MARKETS:
            self.specs[market.carrier] = spec_for(market.carrier, self.sims[market.carrier].url, tps=DEMO_TPS,
                                                  timeout_s=DEMO_TIMEOUT_S, connect_s=5.0)
            await self.admin("onboard_carrier", p_spec=self.specs[market.carrier])
        self.callback_carriers = [code for code, spec in self.specs.items() if spec.get("callbacks")]
        cur = await self.shard_conns[0].execute(queries.DEMO_ONE_TIME_OPTIN_CARRIERS)
        self.one_time_optin = {code for (code,) in await cur.fetchall()}
        for merchant in MERCHANTS:
            document = await self.admin("add_merchant", p_code=merchant.code, p_name=merchant.name,
                                        p_webhook_url=f"{self.receiver.url}/hooks/{merchant.code}",
                                        p_platform_fee_bp=merchant.platform_fee_bp)
            self.receiver.secrets[merchant.code] = document["webhook_secret"]
            for code, name in ((merchant.subscription, merchant.subscription_name),
                               (merchant.one_time, merchant.one_time_name)):
                await self.admin("add_product", p_merchant=merchant.code, p_code=code, p_name=name,
                                 p_retry_policy="step_down", p_retry_timing="best_hour")
            for market in MARKETS:
                for product, plan in ((merchant.subscription, merchant.plan), (merchant.one_time, "one_time")):
                    for amount, variant in zip(market.prices[product], VARIANTS[product], strict=False):
                        await self.admin("add_price_point", p_merchant=merchant.code, p_product=product,
                                         p_plan=plan, p_amount_minor=amount, p_currency=market.currency,
                                         p_variant=variant, p_carrier=market.carrier)
        self.make_people()
        numbers = [person.msisdn for person in self.people]
        cur = await self.conn.execute(queries.DEMO_PARTITION_OF_NUMBERS, [numbers])
        self.partition_of_number = {digits(number): partition for number, partition in await cur.fetchall()}
        await self.start_http_merchant()
        for code in ("oneapi_gb", "parlayx_za"):
            self.sims[code].faults.inject("drop_after_charge", operation="charge", times=2)
        await self.start_daemons()

    async def start_http_merchant(self) -> None:
        """An API server per partition, an API client of the HTTP merchant on each, one sink."""
        import tempfile

        from carrierpay.demo_http import HttpMerchant, Sink, make_certificate
        from carrierpay.http_api.server import ApiServer

        self.exponents = await currency_exponents(self.shard_conns[0], [market.currency for market in MARKETS])
        directory = Path(tempfile.mkdtemp(prefix="carrierpay-demo-sink-"))
        self._stack.callback(shutil.rmtree, directory, True)
        self.sink_cert, key = make_certificate(directory)
        self.sink = await Sink(self.sink_cert, key).start()
        self._stack.push_async_callback(self.sink.stop)
        merchant = next(m for m in MERCHANTS if m.code == HTTP_MERCHANT)
        backends = []
        for url, conn in zip(self.db.shard_urls, self.shard_conns, strict=True):
            api = await ApiServer(url, port=0).start()
            self._stack.push_async_callback(api.stop)
            client = await self._one(conn, queries.ADD_API_CLIENT, {"merchant": HTTP_MERCHANT, "scopes": None,
                                                                   "default_product": merchant.one_time})
            backend = await HttpMerchant(api.base_url, client, self.sink).start()
            self._stack.push_async_callback(backend.stop)
            backends.append(backend)
        self.http = PartitionedHttp(backends, self.partition_of_number)

    async def start_daemons(self) -> None:
        from carrierpay.adapters.callback_server import CallbackServer
        from carrierpay.adapters.daemon import AdapterDaemon
        from carrierpay.adapters.reconciler import Reconciler
        from carrierpay.adapters.registry import connector_factory
        from carrierpay.webhooks import DestinationPolicy
        from carrierpay.webhooks import run as run_webhooks

        receiver = DestinationPolicy(allow_networks=(ip_network("127.0.0.1/32"),), allow_http=True)
        trusted = ssl.create_default_context(cafile=str(self.sink_cert))
        for partition, (url, history_url) in enumerate(zip(self.db.shard_urls, self.db.history_urls, strict=True)):
            # The partition's own group: nothing in it reaches another partition.
            callbacks = await self._stack.enter_async_context(CallbackServer(url, secrets=SECRETS))
            factory = connector_factory(secrets=SECRETS, callback_base=callbacks.base_url)
            adapters = AdapterDaemon(url, factory, batch=250, lease=timedelta(minutes=5), poll_interval=0.05,
                                     worker=f"demo-p{partition}-adapter")
            self.tasks.append(asyncio.ensure_future(adapters.run(self.stop)))
            reconciler = Reconciler(url, factory, interval=0.2, batch=500)
            self.tasks.append(asyncio.ensure_future(reconciler.run(self.stop)))
            self.tasks.append(asyncio.ensure_future(run_webhooks(url, policy=receiver, interval=0.2, batch=500,
                                                                 stop=self.stop, ssl_context=trusted)))
            shipper = self._processes.Process(
                target=ship_history, name=f"history-shipper-{partition}", daemon=True,
                args=(url, history_url, self.logfile, self._shipper_stop, self._shipper_errors))
            shipper.start()
            self.shippers.append(shipper)

    def stop_shipper(self) -> None:
        for partition, shipper in enumerate(self.shippers):
            self._shipper = shipper
            self.shipper_error = None
            super().stop_shipper()
            if self.shipper_error:
                self.shipper_errors.append(f"partition {partition}: {self.shipper_error}")
        self.shippers.clear()
        self.shipper_error = "; ".join(self.shipper_errors) or None

    # ------------------------------------------------------------------ time and work, on every partition

    async def advance(self, delta: timedelta) -> None:
        self.clock.advance(delta)
        await self.admin("advance_clock", p_by=delta)

    async def tick_scheduler(self) -> None:
        from carrierpay.scheduler import tick

        for partition, conn in enumerate(self.shard_conns):
            try:
                await tick(conn, batch=5000)
            except psycopg.Error as exc:  # reported as a failed check; the week goes on
                message = str(exc).strip().splitlines()[0]
                self.stats.scheduler_errors[f"partition {partition}: {message}"] += 1

    async def work_due(self) -> int:
        return sum(await self.each(queries.DEMO_WORK_DUE, {"callback_carriers": self.callback_carriers}))

    async def charges_collected(self) -> tuple[int, int]:
        collected = attempted = 0
        for conn in self.shard_conns:
            row = await (await conn.execute(queries.DEMO_CHARGES_COLLECTED)).fetchone()
            collected, attempted = collected + row[0], attempted + row[1]
        return collected, attempted

    async def open_calls(self) -> int:
        return sum(await self.each(queries.DEMO_OPEN_CALLS))

    async def notifications_due(self) -> int:
        return sum(await self.each(queries.DEMO_NOTIFICATIONS_DUE))

    # ------------------------------------------------------------------ report and checks

    def partition_ledger(self, partition: int):
        """What each simulator charged and refunded the numbers this partition owns."""
        def ledger(carrier: str) -> tuple[int, int]:
            sim_ledger = self.sims[carrier].ledger
            mine = [t for t in sim_ledger.charges() if self.partition_of_number.get(digits(t.msisdn)) == partition]
            refunds = [t for t in sim_ledger.refunds()
                       if self.partition_of_number.get(digits(t.msisdn)) == partition]
            return sum(t.amount_minor for t in mine), sum(t.amount_minor for t in refunds)

        return ledger

    async def report(self) -> dict[str, Any]:
        checks: dict[str, dict[str, Any]] = {"scheduler_ticks_clean": self.scheduler_check()}
        partitions: list[list[dict]] = []
        receivable_total: Counter = Counter()
        self.stop_shipper()
        lags = await self.each(queries.DEMO_HISTORY_UNSHIPPED)
        for partition, conn in enumerate(self.shard_conns):
            rows, receivable = await self.carrier_rows(conn)
            partitions.append(rows)
            receivable_total.update(receivable)
            name = f"partition_{partition}"
            for check, result in (await self.database_checks(conn)).items():
                checks[f"{name}_{check}"] = result
            checks[f"{name}_carrier_ledgers_agree"] = self.ledgers_check(rows, receivable,
                                                                         self.partition_ledger(partition))
            checks[f"{name}_webhooks_delivered"] = await self.webhooks_check(conn)
            checks[f"{name}_history_shipped"] = {
                "ok": lags[partition] == 0, "detail": f"{lags[partition]} row(s) not shipped"}
        rows = merged_rows(partitions)
        checks["carrier_ledgers_agree_in_total"] = self.ledgers_check(
            rows, receivable_total, lambda carrier: (self.sims[carrier].ledger.charged_total(),
                                                     self.sims[carrier].ledger.refunded_total()))
        checks["http_merchant_served"] = self.http_check()
        checks["history_shippers_clean"] = {"ok": self.shipper_error is None,
                                            "detail": self.shipper_error or "every partition's shipper finished"}
        return {"database": config.DATABASE_NAME, "url": redact_url(self.db.url),
                "partition_urls": [redact_url(url) for url in self.db.shard_urls],
                "history_url": "; ".join(redact_url(url) for url in self.db.history_urls),
                "business_clock": (await self._one(self.shard_conns[0], queries.CLOCK_NOW)).isoformat(),
                "carriers": rows, "partitions": partitions, "checks": checks, "totals": self.totals(rows),
                "http": self.http_summary(), "ok": all(check["ok"] for check in checks.values())}

    def data_location(self) -> str:
        return (f"data: front {redact_url(self.db.url)}; partitions "
                + ", ".join(redact_url(url) for url in self.db.shard_urls)
                + f"; history store {DEMO_HISTORY_DATABASE} on each partition's cluster; clusters under {self.db.home}")


# Columns of report.carrier_summary that are ratios: recomputed over the partitions, or left out.
RATIOS = {"success_pct", "renewal_success_pct", "retries_per_success"}


def _additive(key: str, value: Any) -> bool:
    return type(value) is int and key not in RATIOS and key != "currency_exponent"


def merged_rows(partitions: list[list[dict]]) -> list[dict]:
    """report.carrier_summary over every partition: counts and money added up per carrier."""
    merged: dict[str, dict] = {}
    for rows in partitions:
        for row in rows:
            total = merged.setdefault(row["carrier"], {key: 0 if _additive(key, value) else value
                                                       for key, value in row.items()})
            for key, value in row.items():
                if _additive(key, value):
                    total[key] += value
    for total in merged.values():
        finished = total["charges_collected"] + total["charges_failed"]
        total["success_pct"] = round(100 * total["charges_collected"] / finished, 1) if finished else None
        total["renewal_success_pct"] = (round(100 * total["renewals_collected"] / total["renewal_attempts"], 1)
                                        if total["renewal_attempts"] else None)
        total["retries_per_success"] = None  # needs the partitions' attempts per subscription charge
    return list(merged.values())


async def run_sharded_demo(options: DemoOptions, console: Any, logfile: Path, handler: Any,
                           began: float) -> dict[str, Any]:
    from carrierpay.shards import local

    database = await asyncio.to_thread(prepare_sharded, options.shards, console.print)
    try:
        demo = ShardedDemo(options, database, console, logfile)
        return await _run_prepared_demo(options, database, console, logfile, handler, began, demo)
    finally:
        # Whatever ended the run, what the demo started it stops; the data stays until the next run.
        await asyncio.to_thread(local.down, database.home)
        console.print(f"stopped the front and the partitions (the data stays under {database.home} until the "
                      "next run)")
