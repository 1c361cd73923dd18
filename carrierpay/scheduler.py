"""`carrierpay scheduler run`: drives the in-database scheduling engine on a tick.

Each tick queues due renewals and retries (sched.run_due, in batches until none are left),
folds the hour statistics used for best-hour retries, the hourly rollups and the ledger, judges the carriers'
circuit breakers (each trip and reset is logged), and expires stale adapter leases.
Several schedulers may run at once: the database hands each due subscription to one of them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import psycopg

from carrierpay import metrics, queries
from carrierpay.daemon import run_until_stopped, sleep_or_stop

log = logging.getLogger("carrierpay.scheduler")


@dataclass
class TickReport:
    queued: int = 0
    leases: dict | None = None
    folded: int = 0
    breakers: list[tuple[str, str, str]] = field(default_factory=list)


async def tick(conn: psycopg.AsyncConnection, batch: int = 1000) -> TickReport:
    report = TickReport()
    while True:
        cur = await conn.execute(queries.RUN_DUE, {"limit": batch})
        queued = (await cur.fetchone())[0]
        report.queued += queued
        if queued < batch:
            break
    await conn.execute(queries.FOLD_HOUR_STATS)
    cur = await conn.execute(queries.FOLD_ROLLUPS)
    report.folded = (await cur.fetchone())[0]
    await conn.execute(queries.FOLD_LEDGER)
    cur = await conn.execute(queries.RUN_BREAKERS)
    report.breakers = [tuple(row) for row in await cur.fetchall()]
    cur = await conn.execute(queries.EXPIRE_LEASES, {"limit": 10000})
    report.leases = (await cur.fetchone())[0]
    return report


async def run(url: str, *, interval: float = 1.0, batch: int = 1000, stop: asyncio.Event | None = None,
              once: bool = False) -> None:
    stop = stop or asyncio.Event()

    async def body(stop: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                report = await tick(conn, batch)
                metrics.SCHEDULER_QUEUED.inc(report.queued)
                metrics.ROLLUP_FOLDED.inc(report.folded)
                if report.queued:
                    log.info("queued %d renewal charges", report.queued)
                for carrier, state, reason in report.breakers:
                    # The operator's line: a carrier's calls are held, or sent again.
                    log.warning("carrier %s: circuit breaker %s (%s)", carrier,
                                "tripped, calls held" if state == "open" else "reset, calls flowing", reason)
                    metrics.BREAKER_CHANGES.labels(carrier=carrier, state=state).inc()
                if once:
                    stop.set()
                    return
                await sleep_or_stop(stop, interval)

    await run_until_stopped(body, stop, name="scheduler")
