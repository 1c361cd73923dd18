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
from carrierpay.lifecycle import run_until_stopped, sleep_or_stop

log = logging.getLogger("carrierpay.scheduler")


@dataclass
class TickReport:
    queued: int = 0
    leases: dict | None = None
    folded: int = 0
    breakers: list[tuple[str, str, str]] = field(default_factory=list)


async def queue_due(conn: psycopg.AsyncConnection, batch: int) -> int:
    """sched.run_due batch by batch until no renewal is left due; how many charges were queued. A
    batch that also moved rows to their next slot (outside the charging window, out of attempts
    today) queues fewer than a batch while more are due, so a short batch alone does not end the
    tick: it ends when sched.due_left says nothing is due, or when a batch changed nothing due (the
    carriers' room in the queue is used up: the next tick goes on)."""
    queued_in_all, left = 0, None
    while True:
        queued = (await (await conn.execute(queries.RUN_DUE, {"limit": batch})).fetchone())[0]
        queued_in_all += queued
        if queued >= batch:
            continue
        now_left = (await (await conn.execute(queries.DUE_LEFT)).fetchone())[0]
        if now_left == 0 or now_left == left:
            return queued_in_all
        left = now_left


async def tick(conn: psycopg.AsyncConnection, batch: int = 1000) -> TickReport:
    report = TickReport(queued=await queue_due(conn, batch))
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
