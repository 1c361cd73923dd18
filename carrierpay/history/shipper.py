"""The history shipper: drains the outboxes (cp.event, cp.carrier_log) into the history store.

One batch is one transaction on the payment database:

    claim rows (adapter.claim_history_events / claim_carrier_logs: bucket locks + FOR UPDATE SKIP LOCKED)
    → redact → store.write (durable, idempotent) → delete the claimed rows → commit

The rows stay locked until the commit, so no other shipper sends them meanwhile; if the store
fails, the transaction rolls back and the rows wait for the next attempt; if the commit fails
after the store confirmed, the next attempt re-sends and the store ignores the duplicates.
Nothing is deleted that the store has not confirmed. docs/history.md has the full argument.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

import psycopg
from psycopg.rows import dict_row

from carrierpay import metrics, queries
from carrierpay.history.documents import event_document, log_document
from carrierpay.history.redact import Redactor
from carrierpay.history.stores import HistoryStore, StoreUnavailable, retention_days

log = logging.getLogger(__name__)

DEFAULT_BATCH = 500
RETENTION_EVERY_S = 3600


@dataclass
class ShipResult:
    events: int = 0
    logs: int = 0
    batches: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def documents(self) -> int:
        return self.events + self.logs


class Shipper:
    """Ships batches from one payment database to one store. Not thread-safe: one per thread."""

    def __init__(self, database_url: str, store: HistoryStore, *, name: str | None = None,
                 batch_size: int = DEFAULT_BATCH, redactor: Redactor | None = None):
        self.database_url = database_url
        self.store = store
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.batch_size = batch_size
        self.redactor = redactor or Redactor.from_env()
        self._conn: psycopg.Connection | None = None
        self._store_ready = False

    def _db(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, row_factory=dict_row, autocommit=True)
            self._conn.execute(queries.HISTORY_REPORT_SHIPPER, [self.name, socket.gethostname(), os.getpid(), None])
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self.store.close()

    def ship_batch(self) -> tuple[int, int]:
        """Ship one batch; returns (events, logs) shipped. Raises StoreUnavailable, leaving the outbox intact."""
        conn = self._db()
        try:
            if not self._store_ready:
                self.store.ensure_ready()
                self._store_ready = True
            with conn.transaction():
                events = conn.execute(queries.HISTORY_CLAIM_EVENTS, [self.batch_size]).fetchall()
                logs = conn.execute(queries.HISTORY_CLAIM_LOGS, [self.batch_size]).fetchall()
                if not events and not logs:
                    return 0, 0
                documents = [event_document(row, self.redactor) for row in events]
                documents += [log_document(row, self.redactor) for row in logs]
                self.store.write(documents)
                conn.execute(queries.HISTORY_COMPLETE_BATCH, [self.name, [r["event_id"] for r in events],
                                                   [r["log_id"] for r in logs]])
        except StoreUnavailable as exc:
            self._report_error(str(exc))
            raise
        return len(events), len(logs)

    def _report_error(self, message: str) -> None:
        try:
            self._db().execute(queries.HISTORY_REPORT_SHIPPER,
                               [self.name, socket.gethostname(), os.getpid(), message[:2000]])
        except psycopg.Error:
            log.warning("could not record the shipper error in the database", exc_info=True)

    def drain(self, max_batches: int | None = None) -> ShipResult:
        """Ship until a claim finds nothing this shipper may take (rows of aggregates another shipper
        holds are left to it). Raises StoreUnavailable on the first failed batch."""
        result = ShipResult()
        while max_batches is None or result.batches < max_batches:
            events, logs = self.ship_batch()
            if not events and not logs:
                break
            result.events += events
            result.logs += logs
            metrics.HISTORY_SHIPPED.labels(outbox="event").inc(events)
            metrics.HISTORY_SHIPPED.labels(outbox="carrier_log").inc(logs)
            result.batches += 1
        return result

    def run(self, *, interval: float = 1.0, stop: threading.Event | None = None, retention: bool = True,
            max_backoff: float = 60.0, on_result=None) -> None:
        """Ship until `stop` is set: drain, sleep `interval`, repeat; back off while the store is down."""
        stop = stop or threading.Event()
        backoff = interval
        last_retention = 0.0
        while not stop.is_set():
            try:
                result = self.drain()
                backoff = interval
                if on_result:
                    on_result(result)
                if retention and time.monotonic() - last_retention >= RETENTION_EVERY_S:
                    self.store.apply_retention(retention_days())
                    last_retention = time.monotonic()
            except StoreUnavailable as exc:
                log.warning("history store unavailable, retrying in %.0fs: %s", backoff, exc)
                if on_result:
                    on_result(ShipResult(errors=[str(exc)]))
                stop.wait(backoff)
                backoff = min(backoff * 2, max_backoff)
                continue
            except psycopg.OperationalError as exc:
                # The payment database went away: reconnect on the next round.
                log.warning("payment database unavailable, retrying in %.0fs: %s", backoff, exc)
                self._conn = None
                stop.wait(backoff)
                backoff = min(backoff * 2, max_backoff)
                continue
            stop.wait(interval)


def lag(database_url: str) -> list[dict]:
    """Rows of report.history_lag: per outbox, unshipped count and the age of the oldest row."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute(queries.HISTORY_LAG).fetchall()
