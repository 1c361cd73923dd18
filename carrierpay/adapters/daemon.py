"""`carrierpay adapters run`: LISTEN for queued carrier calls, claim them in batches, call the
carriers concurrently (each connector keeps its carrier's rate limit), complete in batches.

A lease bounds how long a claimed call may stay with this process. If the process dies, the
database expires the lease: calls safe to repeat go back to the queue, charges become unknown
and are reconciled, never blindly sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, Protocol

import psycopg
from psycopg.types.json import Jsonb

from carrierpay import queries
from carrierpay.daemon import run_until_stopped

log = logging.getLogger("carrierpay.adapters")


class Connector(Protocol):
    async def execute(self, call: Mapping[str, Any]) -> dict[str, Any]: ...


ConnectorFactory = Callable[[str, dict], Awaitable[Connector]]  # see carrierpay.adapters.registry


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def _claim(conn: psycopg.AsyncConnection, carrier: str, limit: int, lease: timedelta, worker: str) -> list[dict]:
    params = {"carrier": carrier, "limit": limit, "lease": lease, "worker": worker}
    cur = await conn.execute(queries.CLAIM_CALLS, params)
    return [row[0] for row in await cur.fetchall()]


async def _complete(conn: psycopg.AsyncConnection, results: list[dict]) -> dict:
    """Complete a batch in one transaction. If the batch is refused (one bad result must not hold
    the others hostage), complete the results one by one; a result that still fails stays leased,
    and the lease expiry settles it safely (requeue, or unknown for money)."""
    try:
        cur = await conn.execute(queries.COMPLETE_CALLS, {"results": Jsonb(results)})
        return (await cur.fetchone())[0]
    except (psycopg.OperationalError, psycopg.InterfaceError):
        raise
    except psycopg.Error as exc:
        if len(results) == 1:
            log.error("could not complete call %s: %s", results[0].get("call_id"), str(exc).strip())
            return {"error": 1}
        log.warning("batch of %d refused (%s); completing one by one", len(results), str(exc).strip())
    summary: dict[str, int] = {}
    for result in results:
        for key, count in (await _complete(conn, [result])).items():
            summary[key] = summary.get(key, 0) + count
    return summary


async def _call_safely(connector: Connector, call: dict) -> dict:
    """A connector that raises must not lose the call: its outcome is unknown (or a safe failure)."""
    try:
        result = await connector.execute(call)
    except Exception as exc:  # the outcome of a half-sent request is not known
        log.exception("connector failed on call %s", call.get("call_id"))
        result = {"outcome": "unknown", "reason": "unknown", "carrier_message": f"{type(exc).__name__}: {exc}"}
    result["call_id"] = call["call_id"]
    return result


def _outcomes(results: list[dict]) -> str:
    counts: dict[str, int] = {}
    for result in results:
        key = result.get("outcome") or "?"
        if result.get("reason") and result.get("outcome") != "succeeded":
            key += f"/{result['reason']}"
        counts[key] = counts.get(key, 0) + 1
    return " ".join(f"{key}={count}" for key, count in sorted(counts.items()))


class AdapterDaemon:
    def __init__(
        self,
        url: str,
        connector_factory: ConnectorFactory,
        *,
        carriers: list[str] | None = None,
        batch: int = 200,
        lease: timedelta = timedelta(seconds=60),
        poll_interval: float = 1.0,
        worker: str | None = None,
        reload_interval: float = 30.0,
    ):
        self.url = url
        self.connector_factory = connector_factory
        self.only = set(carriers or [])
        self.batch = batch
        self.lease = lease
        self.poll_interval = poll_interval
        self.worker = worker or worker_name()
        self.reload_interval = reload_interval
        self.connectors: dict[str, Connector] = {}
        self.broken: dict[str, str] = {}  # carriers whose connector could not be built, and why
        self.completed = 0

    async def _load_connectors(self, conn: psycopg.AsyncConnection) -> None:
        """Build a connector for every enabled carrier (once), and drop those no longer enabled (their
        carrier loop closes them once its batch in flight is done)."""
        cur = await conn.execute(queries.ENABLED_CARRIERS)
        enabled = {code: spec for code, spec in await cur.fetchall() if not self.only or code in self.only}
        for code in list(self.connectors):
            if code not in enabled:
                self.connectors.pop(code)
        for code, spec in enabled.items():
            if code in self.connectors or code in self.broken:
                continue
            try:
                self.connectors[code] = await self.connector_factory(code, spec)
            except Exception as exc:  # a carrier we cannot speak to must not stop the others
                self.broken[code] = f"{type(exc).__name__}: {exc}"
                log.error("carrier %s skipped: %s", code, self.broken[code])

    async def _run_carrier(self, conn: psycopg.AsyncConnection, code: str, connector: Connector) -> int:
        calls = await _claim(conn, code, self.batch, self.lease, self.worker)
        if not calls:
            return 0
        results = list(await asyncio.gather(*(_call_safely(connector, call) for call in calls)))
        summary = await _complete(conn, results)
        log.info("%s: %d calls: %s (%s)", code, len(results), _outcomes(results),
                 " ".join(f"{key}={value}" for key, value in sorted(summary.items())))
        return len(results)

    async def _body(self, stop: asyncio.Event) -> None:
        """One loop per carrier, so a carrier that answers slowly or not at all (each call waits for its
        timeout) never holds up the others' claims. A failure of the database connection ends them all
        (the task group), and `run_until_stopped` reconnects."""
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn, \
                await psycopg.AsyncConnection.connect(self.url, autocommit=True) as listener:
            await listener.execute(queries.LISTEN_CALLS)
            try:
                await self._supervise_carriers(conn, listener, stop)
            except BaseExceptionGroup as failed:
                # The database went away under one of the loops: report it as such, so we reconnect.
                lost, other = failed.split((psycopg.OperationalError, psycopg.InterfaceError))
                if lost is not None and other is None:
                    raise lost.exceptions[0] from failed
                raise

    async def _supervise_carriers(self, conn: psycopg.AsyncConnection, listener: psycopg.AsyncConnection,
                                  stop: asyncio.Event) -> None:
        """Start a loop for each enabled carrier, and for carriers enabled later (checked every
        `reload_interval`)."""
        wakes: dict[str, asyncio.Event] = {}
        loops: dict[str, tuple[asyncio.Task, Connector]] = {}
        async with asyncio.TaskGroup() as group:
            group.create_task(self._listen(listener, wakes, stop))
            while not stop.is_set():
                await self._load_connectors(conn)
                for code, connector in self.connectors.items():
                    running = loops.get(code)
                    # A carrier disabled and enabled again has a new connector: its old loop is ending.
                    if running is None or running[0].done() or running[1] is not connector:
                        wakes[code] = asyncio.Event()
                        task = group.create_task(self._carrier_loop(conn, code, connector, wakes[code], stop))
                        loops[code] = (task, connector)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.reload_interval)

    async def _carrier_loop(self, conn: psycopg.AsyncConnection, code: str, connector: Connector,
                            wake: asyncio.Event, stop: asyncio.Event) -> None:
        """Claim, call and complete this carrier's batches until stopped or the carrier is dropped; a
        batch in flight is always completed first."""
        try:
            while not stop.is_set() and self.connectors.get(code) is connector:
                wake.clear()
                settled = await self._run_carrier(conn, code, connector)
                self.completed += settled
                if settled:
                    continue  # more may be waiting: claim again before sleeping
                # Until a NOTIFY, or the poll interval (the fallback when one is missed) passes.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.poll_interval)
        finally:
            if self.connectors.get(code) is not connector:
                await _close(connector)

    async def _listen(self, listener: psycopg.AsyncConnection, wakes: dict[str, asyncio.Event],
                      stop: asyncio.Event) -> None:
        """Wake every carrier loop on each NOTIFY (it does not say which carrier the work is for)."""
        while not stop.is_set():
            async for _ in listener.notifies(timeout=self.poll_interval, stop_after=1):
                for wake in list(wakes.values()):
                    wake.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        try:
            await run_until_stopped(self._body, stop, name="adapters")
        finally:
            for connector in self.connectors.values():
                await _close(connector)
            self.connectors.clear()


async def _close(connector: Connector) -> None:
    close = getattr(connector, "close", None)
    if close is not None:
        try:
            await close()
        except Exception:  # closing is best effort
            log.debug("closing a connector failed", exc_info=True)

