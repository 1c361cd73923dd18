"""What every carrierpay daemon shares: a stop signal, and staying alive across database restarts.

Daemons hold no state of their own: everything is in PostgreSQL, so a daemon that lost its
connection simply reconnects and carries on, and a killed one loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable

import psycopg

from carrierpay import metrics

log = logging.getLogger("carrierpay.lifecycle")


def install_stop_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT ask the daemon to finish its current batch and exit."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass


async def run_until_stopped(
    body: Callable[[asyncio.Event], Awaitable[None]],
    stop: asyncio.Event,
    *,
    name: str,
    max_backoff: float = 10.0,
) -> None:
    """Run `body` until `stop` is set, reconnecting with back-off whenever the database goes away."""
    backoff = 0.2
    while not stop.is_set():
        try:
            await body(stop)
            backoff = 0.2
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            log.warning("%s: database unavailable (%s); retrying in %.1fs", name, str(exc).strip(), backoff)
            metrics.ERRORS.labels(daemon=name, kind="database_unavailable").inc()
            await sleep_or_stop(stop, backoff)
            backoff = min(backoff * 2, max_backoff)


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def stop_tasks(stop: asyncio.Event, tasks: Iterable[asyncio.Future], grace_s: float) -> None:
    """Set `stop`, then give each task `grace_s` seconds to finish; cancel one that takes longer."""
    stop.set()
    for task in tasks:
        try:
            await asyncio.wait_for(task, grace_s)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
