"""`carrierpay adapters run`: LISTEN for queued carrier calls, claim them in batches, call the
carriers concurrently (each connector keeps its carrier's rate limit), and record each answer as
soon as it arrives.

A claimed call is sent at once and its answer is recorded within milliseconds, whatever the other
calls of its batch are doing: the `AnswerRecorder` commits whatever answers arrived in the last few
milliseconds together (one `adapter.complete_calls` per group), so a refund answered at once never
waits for a charge that is timing out. Answers that cannot be recorded because the database is
unreachable are held and recorded after reconnection, in order, once each. Only an adapter killed
between a carrier's answer and its commit loses the answer.

A lease bounds how long a claimed call may stay with this process. If the process dies, the
database expires the lease (`adapter.expire_leases`): a call the carrier deduplicates by our
correlator, or one that changes nothing, goes back to the queue with the same correlator; any other
(a charge to a carrier that does not deduplicate) becomes unknown and is reconciled, never sent
again blindly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import psycopg
from psycopg.types.json import Jsonb

from carrierpay import metrics, queries
from carrierpay.lifecycle import run_until_stopped

log = logging.getLogger("carrierpay.adapters")

# How the adapters' database sessions show in pg_stat_activity.
APPLICATION_NAME = "carrierpay adapters"


class Connector(Protocol):
    async def execute(self, call: Mapping[str, Any]) -> dict[str, Any]: ...


ConnectorFactory = Callable[[str, dict], Awaitable[Connector]]  # see carrierpay.adapters.registry


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def _connect(url: str) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(url, autocommit=True, application_name=APPLICATION_NAME)


async def _claim(conn: psycopg.AsyncConnection, carrier: str, limit: int, lease: timedelta, worker: str) -> list[dict]:
    params = {"carrier": carrier, "limit": limit, "lease": lease, "worker": worker}
    with metrics.CLAIM_DURATION.labels(carrier=carrier).time():
        cur = await conn.execute(queries.CLAIM_CALLS, params)
        return [row[0] for row in await cur.fetchall()]


async def complete_results(conn: psycopg.AsyncConnection, results: list[dict]) -> dict:
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
        for key, count in (await complete_results(conn, [result])).items():
            summary[key] = summary.get(key, 0) + count
    return summary


async def call_safely(connector: Connector, call: dict) -> dict:
    """A connector that raises must not lose the call: its outcome is unknown (or a safe failure)."""
    try:
        result = await connector.execute(call)
    except Exception as exc:  # the outcome of a half-sent request is not known
        log.exception("connector failed on call %s", call.get("call_id"))
        metrics.ERRORS.labels(daemon="adapters", kind="connector").inc()
        result = {"outcome": "unknown", "reason": "unknown", "carrier_message": f"{type(exc).__name__}: {exc}"}
    result["call_id"] = call["call_id"]
    if call.get("lease") is not None:
        # Names the lease answered, so recording the same answer twice changes nothing.
        result["lease"] = call["lease"]
    return result


def _outcomes(results: list[dict]) -> str:
    counts: dict[str, int] = {}
    for result in results:
        key = result.get("outcome") or "?"
        if result.get("reason") and result.get("outcome") != "succeeded":
            key += f"/{result['reason']}"
        counts[key] = counts.get(key, 0) + 1
    return " ".join(f"{key}={count}" for key, count in sorted(counts.items()))


async def _wait_any(*events: asyncio.Event, timeout: float) -> None:
    """Until one of the events is set, or `timeout` seconds have passed."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


@dataclass(eq=False)
class _Flight:
    """One carrier connector's calls that were claimed and whose answers are not recorded yet."""

    code: str
    connector: Connector
    calling: set[asyncio.Task] = field(default_factory=set)  # with the carrier now
    unrecorded: int = 0  # claimed and not yet recorded (those calling, and answers the recorder holds)
    room: asyncio.Event = field(default_factory=asyncio.Event)  # set whenever an answer is recorded
    retired: bool = False  # its carrier was dropped: the connector closes once these calls are answered


class AnswerRecorder:
    """Records answers as they arrive, in small groups bounded in time.

    An answer waits at most `window` seconds for others to share its commit (or less: as soon as
    `limit` answers are waiting, or no call is still with a carrier), then whatever is waiting goes
    to the database in one `adapter.complete_calls`. Answers stay in memory until recorded: when
    the database is unreachable they are kept, in arrival order, and recorded after reconnection.
    A commit cut off by a lost connection may or may not have happened, so its group is sent again;
    each answer names its lease and `adapter.complete_calls` records an answer once per lease.
    """

    def __init__(self, url: str, *, window: float = 0.01, limit: int = 200, calling: Callable[[], int] = lambda: 1,
                 max_backoff: float = 2.0, report_interval: float = 10.0) -> None:
        self.url = url
        self.window = window
        self.limit = max(1, limit)
        self.calling = calling  # how many calls are still with a carrier (0: no answer is coming soon)
        self.max_backoff = max_backoff
        self.report_interval = report_interval
        self.recorded = 0
        self._held: deque[tuple[float, dict, _Flight | None]] = deque()
        self._arrived = asyncio.Event()
        self._ready = asyncio.Event()  # a group need not wait for the rest of its window
        self._closing = False
        self._conn: psycopg.AsyncConnection | None = None
        self._tally: dict[str, Counter] = {}
        self._commits = 0
        self._reported_at = 0.0

    @property
    def held(self) -> int:
        return len(self._held)

    def put(self, result: dict, flight: _Flight | None = None) -> None:
        self._held.append((asyncio.get_running_loop().time(), result, flight))
        metrics.ANSWERS_HELD.set(len(self._held))
        self._arrived.set()
        if len(self._held) >= self.limit or self.calling() == 0:
            self._ready.set()

    def close(self) -> None:
        """Record what is held (and what still arrives while running), then end `run`."""
        self._closing = True
        self._arrived.set()
        self._ready.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._held:
                    if self._closing:
                        self._report(force=True)
                        return
                    self._arrived.clear()
                    await self._arrived.wait()
                    continue
                delay = self._held[0][0] + self.window - loop.time()
                if delay > 0 and len(self._held) < self.limit and self.calling() > 0 and not self._closing:
                    self._ready.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._ready.wait(), delay)
                group = list(itertools.islice(self._held, self.limit))
                try:
                    await self._record(group)
                except Exception:  # not the database going away (that is retried): a bug, not worth a loop
                    metrics.ERRORS.labels(daemon="adapters", kind="record").inc()
                    log.exception("could not record %d answer(s); their leases will run out and the "
                                  "reconciler settles them", len(group))
                for _, _, flight in group:
                    self._held.popleft()
                    if flight is not None:
                        flight.unrecorded -= 1
                        flight.room.set()
                metrics.ANSWERS_HELD.set(len(self._held))
        finally:
            await self._disconnect()

    async def _record(self, group: list[tuple[float, dict, _Flight | None]]) -> None:
        """Commit one group, however many reconnections it takes."""
        results = [result for _, result, _ in group]
        backoff, waited = 0.05, False
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await _connect(self.url)
                with metrics.COMPLETE_DURATION.time():
                    summary = await complete_results(self._conn, results)
                break
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                log.warning("%d answer(s) held: database unavailable (%s); trying again in %.2fs",
                            len(self._held), reason, backoff)
                metrics.ERRORS.labels(daemon="adapters", kind="database_unavailable").inc()
                waited = True
                await self._disconnect()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
        self.recorded += len(results)
        self._commits += 1
        log.debug("recorded %d answer(s): %s (%s)", len(results), _outcomes(results),
                  " ".join(f"{key}={value}" for key, value in sorted(summary.items())))
        if waited:
            log.info("recorded %d answer(s) held while the database was unavailable", len(results))
        for _, result, flight in group:
            tally = self._tally.setdefault(flight.code if flight is not None else "?", Counter())
            key = result.get("outcome") or "?"
            if result.get("reason") and key != "succeeded":
                key += f"/{result['reason']}"
            tally[key] += 1
        self._report()

    def _report(self, *, force: bool = False) -> None:
        """One log line per carrier every `report_interval` seconds of activity."""
        now = asyncio.get_running_loop().time()
        if not self._tally or (not force and now - self._reported_at < self.report_interval):
            return
        for code, tally in sorted(self._tally.items()):
            log.info("%s: %d answer(s) recorded: %s", code, sum(tally.values()),
                     " ".join(f"{key}={count}" for key, count in sorted(tally.items())))
        log.info("%d commit(s) since the last report", self._commits)
        self._tally.clear()
        self._commits = 0
        self._reported_at = now

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


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
        record_window: float = 0.01,
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
        # Calls sent and not yet recorded, per carrier; they outlive a lost database connection.
        self.flights: dict[str, _Flight] = {}
        self._retiring: set[asyncio.Task] = set()
        self.recorder = AnswerRecorder(url, window=record_window, limit=batch, calling=self._calling)

    @property
    def completed(self) -> int:
        """Answers recorded so far."""
        return self.recorder.recorded

    def _calling(self) -> int:
        return sum(len(flight.calling) for flight in self.flights.values())

    async def _load_connectors(self, conn: psycopg.AsyncConnection) -> None:
        """Build a connector for every enabled carrier (once), and drop those no longer enabled (their
        carrier loop closes them once their calls in flight are answered)."""
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

    def _flight(self, code: str, connector: Connector) -> _Flight:
        flight = self.flights.get(code)
        if flight is None or flight.connector is not connector:
            if flight is not None:
                self._retire(flight)
            flight = self.flights[code] = _Flight(code, connector)
        return flight

    def _retire(self, flight: _Flight) -> None:
        """Close a dropped carrier's connector once the calls it is making are answered."""
        if flight.retired:
            return
        flight.retired = True
        if self.flights.get(flight.code) is flight:
            del self.flights[flight.code]

        async def close_when_answered() -> None:
            await asyncio.gather(*flight.calling, return_exceptions=True)
            await close_connector(flight.connector)

        task = asyncio.ensure_future(close_when_answered())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _send(self, flight: _Flight, call: dict) -> None:
        flight.unrecorded += 1
        task = asyncio.ensure_future(self._call(flight, call))
        flight.calling.add(task)

    async def _call(self, flight: _Flight, call: dict) -> None:
        operation = str(call.get("operation") or "?")
        metrics.CALLS_SENT.labels(carrier=flight.code, operation=operation).inc()
        in_flight = metrics.CALLS_IN_FLIGHT.labels(carrier=flight.code)
        in_flight.inc()
        started = asyncio.get_running_loop().time()
        try:
            result = await call_safely(flight.connector, call)
        finally:
            in_flight.dec()
        metrics.CALL_DURATION.labels(carrier=flight.code, operation=operation).observe(
            asyncio.get_running_loop().time() - started)
        outcome = result.get("outcome")
        metrics.CALL_OUTCOMES.labels(carrier=flight.code, operation=operation,
                                     outcome=outcome if outcome in metrics.OUTCOMES else "other").inc()
        flight.calling.discard(asyncio.current_task())
        self.recorder.put(result, flight)

    async def _body(self, stop: asyncio.Event) -> None:
        """One loop per carrier, so a carrier that answers slowly or not at all (each call waits for its
        timeout) never holds up the others' claims. A failure of the database connection ends them all
        (the task group), and `run_until_stopped` reconnects; calls already sent go on meanwhile, and
        the recorder keeps their answers until it can record them."""
        async with await _connect(self.url) as conn, await _connect(self.url) as listener:
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
                await _wait_any(stop, timeout=self.reload_interval)

    async def _carrier_loop(self, conn: psycopg.AsyncConnection, code: str, connector: Connector,
                            wake: asyncio.Event, stop: asyncio.Event) -> None:
        """Claim this carrier's calls and send each at once, with at most `batch` of them claimed and
        not yet recorded. A claim takes as many as there is room for, and the next one waits only for
        room (a quarter of the batch, or none in flight), not for the slowest call of the last."""
        flight = self._flight(code, connector)
        refill = max(1, self.batch // 4)
        try:
            while not stop.is_set() and self.connectors.get(code) is connector:
                room = self.batch - flight.unrecorded
                if flight.unrecorded and room < refill:
                    flight.room.clear()
                    await _wait_any(stop, flight.room, timeout=self.poll_interval)
                    continue
                wake.clear()
                calls = await _claim(conn, code, room, self.lease, self.worker)
                for call in calls:
                    self._send(flight, call)
                if calls:
                    log.debug("%s: %d call(s) claimed", code, len(calls))
                    continue  # more may be waiting: claim again while there is room
                # Until a NOTIFY, or the poll interval (the fallback when one is missed) passes.
                await _wait_any(stop, wake, timeout=self.poll_interval)
        finally:
            if self.connectors.get(code) is not connector:
                self._retire(flight)

    async def _listen(self, listener: psycopg.AsyncConnection, wakes: dict[str, asyncio.Event],
                      stop: asyncio.Event) -> None:
        """Wake every carrier loop on each NOTIFY (it does not say which carrier the work is for)."""
        while not stop.is_set():
            async for _ in listener.notifies(timeout=self.poll_interval, stop_after=1):
                for wake in list(wakes.values()):
                    wake.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Until `stop`; then the calls already sent are answered and recorded before returning."""
        stop = stop or asyncio.Event()
        recorder = asyncio.ensure_future(self.recorder.run())
        try:
            await run_until_stopped(self._body, stop, name="adapters")
            calling = [task for flight in self.flights.values() for task in flight.calling]
            await asyncio.gather(*calling, *self._retiring, return_exceptions=True)
            self.recorder.close()
            await recorder
        finally:
            pending = [recorder, *self._retiring, *(t for flight in self.flights.values() for t in flight.calling)]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            connectors = {id(c): c for c in [*(f.connector for f in self.flights.values()), *self.connectors.values()]}
            for connector in connectors.values():
                await close_connector(connector)
            self.flights.clear()
            self.connectors.clear()


async def close_connector(connector: Connector) -> None:
    close = getattr(connector, "close", None)
    if close is not None:
        try:
            await close()
        except Exception:  # closing is best effort
            log.debug("closing a connector failed", exc_info=True)

