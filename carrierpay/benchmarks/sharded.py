"""`carrierpay bench --shards N`: the payment benchmark over a front and N partitions.

The world is built as `carrierpay db up --shards N` builds it (a front and N partitions, each its own
embedded PostgreSQL cluster), configured through the front's two-phase admin calls; the merchant's
clients call `api.charge` on the front with the merchant's own login, and each partition has its own
group of adapter daemons with their own fast carrier. The money checks run on every partition against
that partition's daemons, then in total: the simulators' ledgers together equal the sum of
carrier_receivable over the partitions. Renewals are not measured here: the renewal setup loads
subscriptions straight into one database, which would put subscribers on partitions that do not own
their numbers.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from carrierpay.benchmarks.payment import (
    CARRIER,
    CARRIER_SPEC,
    CURRENCY,
    MERCHANT,
    ONE_TIME_PRICE,
    RENEWAL_PRICE,
    BenchOptions,
    Daemons,
    Report,
    charge_clients,
    db_counters,
    load,
    money_checks,
    percentiles,
    pgbench,
    wait_settled,
)


def setup_sharded_world(front_url: str) -> str:
    """The bench carrier, merchant and price points on every partition; returns the merchant's front URL."""
    from carrierpay.shards.fanout import apply_admin

    apply_admin(front_url, "onboard_carrier", {"p_spec": CARRIER_SPEC})
    document = apply_admin(front_url, "add_merchant", {"p_code": MERCHANT, "p_name": "Bench Games",
                                                       "p_webhook_url": "https://bench.example/hooks",
                                                       "p_platform_fee_bp": 1000})
    for code, name in (("gems", "100 gems"), ("club", "Gem club")):
        apply_admin(front_url, "add_product", {"p_merchant": MERCHANT, "p_code": code, "p_name": name})
    for product, plan, amount, variant in (("gems", "one_time", ONE_TIME_PRICE, "gems_100"),
                                           ("club", "daily", RENEWAL_PRICE, "club_day")):
        apply_admin(front_url, "add_price_point", {"p_merchant": MERCHANT, "p_product": product, "p_plan": plan,
                                                   "p_amount_minor": amount, "p_currency": CURRENCY,
                                                   "p_variant": variant, "p_carrier": CARRIER})
    params = conninfo_to_dict(front_url)
    params.update(user=document["db_role"], password=document["db_password"])
    return make_conninfo(**params)


async def backlog_gate(shard_urls: list[str], limit: int, gate: asyncio.Event, stop: asyncio.Event) -> None:
    """The single-node back-pressure, on the calls waiting on all partitions together."""
    conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for url in shard_urls]
    try:
        while not stop.is_set():
            queued = 0
            for conn in conns:
                cur = await conn.execute("select count(*) from cp.call_queue")
                queued += (await cur.fetchone())[0]
            if queued > limit:
                gate.clear()
            elif queued < limit // 2:
                gate.set()
            await asyncio.sleep(0.2)
    finally:
        gate.set()
        for conn in conns:
            await conn.close()


def counters(shard_urls: list[str]) -> list[tuple[int, int, float]]:
    result = []
    for url in shard_urls:
        with psycopg.connect(url, autocommit=True) as conn:
            result.append(db_counters(conn))
    return result


def sharded_payment_phase(merchant_url: str, shard_urls: list[str], opts: BenchOptions, report: Report,
                          pgbench_tps: float | None) -> None:
    out = opts.out
    run_id = f"s{os.getpid()}"
    latencies: list[tuple[float, float]] = []
    errors: Counter[str] = Counter()
    window: dict[str, Any] = {}

    async def main() -> int:
        stop, gate = asyncio.Event(), asyncio.Event()
        gate.set()
        gate_task = asyncio.create_task(backlog_gate(shard_urls, opts.backlog, gate, stop))
        clients = asyncio.create_task(charge_clients(merchant_url, opts, run_id, latencies, stop, gate, errors))
        await asyncio.sleep(opts.warmup)
        window["start"] = await asyncio.to_thread(counters, shard_urls)
        window["t0"] = time.perf_counter()
        await asyncio.sleep(opts.duration)
        window["end"] = await asyncio.to_thread(counters, shard_urls)
        window["t1"] = time.perf_counter()
        stop.set()
        done = await clients
        await gate_task
        for partition, url in enumerate(shard_urls):
            left = await wait_settled(url, "true", timeout=120)
            if left:
                report.failures.append(f"partition {partition}: {left} payments still pending or in flight")
        return done

    done = asyncio.run(main())
    total_final = total_succeeded = 0
    rates = []
    for partition, url in enumerate(shard_urls):
        (c0, _, s0), (c1, _, s1) = window["start"][partition], window["end"][partition]
        with psycopg.connect(url, autocommit=True) as conn:
            final, succeeded = conn.execute(
                """select count(*), count(*) filter (where status = 'succeeded')
                   from cp.procedure
                   where kind = 'charge' and subscription_id is null and status in ('succeeded', 'failed')
                     and final_at >= to_timestamp(%s) and final_at < to_timestamp(%s)""", [s0, s1]).fetchone()
        rate = final / (s1 - s0) if s1 > s0 else 0.0
        rates.append(rate)
        total_final += final
        total_succeeded += succeeded
        out(f"partition {partition}: {rate:.1f} payments/s ({final} final charges, {succeeded} succeeded; "
            f"{(c1 - c0) / final if final else 0:.2f} commits each)")
    seconds = window["t1"] - window["t0"]
    rate = sum(rates)
    window_lat = [lat for ended, lat in latencies if window["t0"] <= ended < window["t1"]]
    lp = percentiles(window_lat)
    out(f"payments/s (sustained): {rate:.1f} final charges over {seconds:.1f} s on {len(shard_urls)} partitions "
        f"({total_succeeded} succeeded, {total_final - total_succeeded} failed; api.charge through the front "
        f"accepted {len(window_lat) / seconds:.1f}/s; {opts.clients} clients, {opts.adapters} adapters per "
        f"partition; {load()})")
    out(f"api.charge latency ms (through the front): p50 {lp[50] * 1000:.1f} p95 {lp[95] * 1000:.1f} "
        f"p99 {lp[99] * 1000:.1f}")
    if pgbench_tps:
        out(f"payments/s ÷ pgbench TPS (of one partition's cluster): {rate / pgbench_tps:.2f}")
    if errors:
        out(f"api.charge errors: {dict(errors)}")
        report.failures.append(f"api.charge raised {sum(errors.values())} errors: {dict(errors)}")
    if total_final == 0:
        report.failures.append("no payment reached a final state")
    report.figures.update(payments_per_s=rate, payments_per_s_by_partition=rates, charges=done, final=total_final,
                          charge_p50_ms=lp[50] * 1000, charge_p95_ms=lp[95] * 1000, charge_p99_ms=lp[99] * 1000)


def sharded_money_checks(shard_urls: list[str], groups: list[Daemons], report: Report) -> None:
    """Every partition's money checks against its own daemons' carrier, then the totals."""
    charged: Counter[str] = Counter()
    receivable: Counter[str] = Counter()
    for partition, (url, daemons) in enumerate(zip(shard_urls, groups, strict=True)):
        part = Report()
        money_checks(url, daemons.ledger, part)
        report.lines.extend(f"partition {partition}: {line}" for line in part.lines)
        report.failures.extend(f"partition {partition}: {failure}" for failure in part.failures)
        charged.update(daemons.ledger["charged"])
        receivable.update(part.figures["receivable"])
    charged_total = {cur: v for cur, v in charged.items() if v}
    receivable_total = {cur: v for cur, v in receivable.items() if v}
    report.lines.append(f"money (all partitions): simulators charged {charged_total}; "
                        f"carrier_receivable {receivable_total}")
    if charged_total != receivable_total:
        report.failures.append(f"in total, simulator ledgers {charged_total} != carrier_receivable {receivable_total}")
    report.lines.append("money checks (all partitions): " + ("ok" if not report.failures
                                                             else "FAILED: " + "; ".join(report.failures)))


def run_sharded(opts: BenchOptions, partitions: int) -> Report:
    from carrierpay.shards import local

    report = Report()
    out = opts.out
    home = opts.home or Path(tempfile.mkdtemp(prefix="carrierpay-bench-shards-", dir="/tmp"))
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o755)
    groups: list[Daemons] = []
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        out(f"machine: {os.cpu_count()} cores, {memory:.1f} GiB memory; a front and {partitions} partitions, "
            f"each its own PostgreSQL cluster{' (fsync off)' if opts.fast else ''}")
        front_url, shard_urls = local.up(home, partitions, say=lambda line: None, fast=opts.fast)
        merchant_url = setup_sharded_world(front_url)
        tps = None
        if opts.pgbench:
            _, parts = local.clusters(home, partitions, opts.fast)
            tps = pgbench(parts[0], opts.pgbench_scale, 8, opts.duration, out)
            report.figures["pgbench_tps"] = tps
        for partition, url in enumerate(shard_urls):
            workdir = home / f"daemons-{partition}"
            workdir.mkdir(exist_ok=True)
            groups.append(Daemons(url, opts.adapters, opts.batch, workdir))
        for daemons in groups:
            daemons.start()
        sharded_payment_phase(merchant_url, shard_urls, opts, report, tps)
        for daemons in groups:
            daemons.stop()
        if opts.renewals:
            out("renewals: not measured over partitions (the single-node bench measures them)")
        sharded_money_checks(shard_urls, groups, report)
        for line in report.lines:
            out(line)
        report.lines.clear()
    finally:
        for daemons in groups:
            if daemons.procs:
                try:
                    daemons.stop()
                except RuntimeError:
                    pass
        local.down(home)
        if not opts.keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            out(f"clusters kept in {home}")
    return report
