"""`carrierpay adapters run`: LISTEN for queued carrier calls, claim them in batches, call the
carriers concurrently (each connector keeps its carrier's rate limit), complete in batches.

A lease bounds how long a claimed call may stay with this process. If the process dies, the
database expires the lease: calls safe to repeat go back to the queue, charges become unknown
and are reconciled, never blindly sent again.
"""

from __future__ import annotations

import asyncio
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


ConnectorFactory = Callable[[str, dict], Awaitable[Connector]]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def _claim(conn: psycopg.AsyncConnection, carrier: str, limit: int, lease: timedelta, worker: str) -> list[dict]:
    params = {"carrier": carrier, "limit": limit, "lease": lease, "worker": worker}
    cur = await conn.execute(queries.CLAIM_CALLS, params)
    return [row[0] for row in await cur.fetchall()]


async def _complete(conn: psycopg.AsyncConnection, results: list[dict]) -> dict:
    cur = await conn.execute(queries.COMPLETE_CALLS, {"results": Jsonb(results)})
    return (await cur.fetchone())[0]


async def _call_safely(connector: Connector, call: dict) -> dict:
    """A connector that raises must not lose the call: its outcome is unknown (or a safe failure)."""
    try:
        result = await connector.execute(call)
    except Exception as exc:  # the outcome of a half-sent request is not known
        log.exception("connector failed on call %s", call.get("call_id"))
        result = {"outcome": "unknown", "reason": "unknown", "carrier_message": f"{type(exc).__name__}: {exc}"}
    result["call_id"] = call["call_id"]
    return result


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
    ):
        self.url = url
        self.connector_factory = connector_factory
        self.only = set(carriers or [])
        self.batch = batch
        self.lease = lease
        self.poll_interval = poll_interval
        self.worker = worker or worker_name()
        self.connectors: dict[str, Connector] = {}
        self.completed = 0

    async def _load_connectors(self, conn: psycopg.AsyncConnection) -> None:
        cur = await conn.execute(queries.ENABLED_CARRIERS)
        for code, spec in await cur.fetchall():
            if self.only and code not in self.only:
                continue
            if code not in self.connectors:
                self.connectors[code] = await self.connector_factory(code, spec)

    async def run_once(self, conn: psycopg.AsyncConnection) -> int:
        """Claim, call and complete one batch per carrier. Returns how many calls were settled."""
        settled = 0
        for code, connector in self.connectors.items():
            calls = await _claim(conn, code, self.batch, self.lease, self.worker)
            if not calls:
                continue
            results = await asyncio.gather(*(_call_safely(connector, call) for call in calls))
            await _complete(conn, list(results))
            settled += len(results)
        self.completed += settled
        return settled

    async def _body(self, stop: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn, \
                await psycopg.AsyncConnection.connect(self.url, autocommit=True) as listener:
            await listener.execute(queries.LISTEN_CALLS)
            await self._load_connectors(conn)
            while not stop.is_set():
                if await self.run_once(conn):
                    continue  # more may be waiting: claim again before sleeping
                await self._wait_for_work(listener, stop)

    async def _wait_for_work(self, listener: psycopg.AsyncConnection, stop: asyncio.Event) -> None:
        """Sleep until a NOTIFY arrives or the poll interval passes (the fallback when one is missed).
        A stop request is noticed within one poll interval."""
        async for _ in listener.notifies(timeout=self.poll_interval, stop_after=1):
            break

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        try:
            await run_until_stopped(self._body, stop, name="adapters")
        finally:
            for connector in self.connectors.values():
                close = getattr(connector, "close", None)
                if close:
                    await close()

