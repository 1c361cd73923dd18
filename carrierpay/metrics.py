"""Prometheus metrics: what each daemon counts as it works, and what the database holds (collector).

Every daemon serves its own counters on `/metrics` when given `--metrics-port` (`carrierpay up`
gives each child one, from `metrics.port` upwards). `carrierpay metrics serve` adds the database
collector: queue depths, unsettled calls by age, the last five minutes per carrier from the minute
rollup, breakers, webhook and history backlogs, unbalanced journals. docs/operations.md says what
to watch and deploy/prometheus/ holds the alert rules.

Labels are bounded sets only: carrier codes, operations, outcomes, states, age bands; never a
number, a payment, a call or a merchant's free text.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from carrierpay import queries

log = logging.getLogger("carrierpay.metrics")

# The outcome label's values (a connector's own word would make an unbounded label).
OUTCOMES = ("succeeded", "failed", "unknown", "pending")

# Carrier answers take from milliseconds to tens of seconds (a timeout); database work milliseconds.
CARRIER_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DATABASE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

DAEMON_UP = Gauge("carrierpay_daemon_up", "1 while this daemon process runs", ["daemon"])
ERRORS = Counter("carrierpay_errors_total", "Errors a daemon met and survived, by kind", ["daemon", "kind"])

CALLS_SENT = Counter("carrierpay_carrier_calls_sent_total", "Carrier calls sent by this adapter",
                     ["carrier", "operation"])
CALL_OUTCOMES = Counter("carrierpay_carrier_call_outcomes_total",
                        "Carrier answers by outcome (succeeded, failed, unknown, pending)",
                        ["carrier", "operation", "outcome"])
CALL_DURATION = Histogram("carrierpay_carrier_call_duration_seconds", "Time from sending a call to its answer",
                          ["carrier", "operation"], buckets=CARRIER_BUCKETS)
CLAIM_DURATION = Histogram("carrierpay_claim_duration_seconds", "Time of one adapter.claim_calls",
                           ["carrier"], buckets=DATABASE_BUCKETS)
COMPLETE_DURATION = Histogram("carrierpay_complete_duration_seconds",
                              "Time of one adapter.complete_calls (a group of answers)", buckets=DATABASE_BUCKETS)
ANSWERS_HELD = Gauge("carrierpay_answers_held", "Carrier answers received and not yet recorded")
CALLS_IN_FLIGHT = Gauge("carrierpay_carrier_calls_in_flight", "Calls with the carrier now", ["carrier"])

SCHEDULER_QUEUED = Counter("carrierpay_scheduler_renewals_queued_total", "Renewal and retry charges queued")
ROLLUP_FOLDED = Counter("carrierpay_rollup_calls_folded_total", "Settled carrier calls folded into the rollups")
BREAKER_CHANGES = Counter("carrierpay_breaker_changes_total", "Circuit breaker trips (open) and resets (closed)",
                          ["carrier", "state"])
RECONCILED = Counter("carrierpay_reconciler_calls_settled_total", "Unsettled calls the reconciler settled")
WEBHOOK_DELIVERIES = Counter("carrierpay_webhook_deliveries_total", "Webhook delivery attempts by result",
                             ["result"])
HISTORY_SHIPPED = Counter("carrierpay_history_shipped_total", "Outbox rows shipped to the history store",
                          ["outbox"])
CALLBACKS = Counter("carrierpay_callbacks_total", "Carrier callbacks received, by how they ended", ["result"])


def expose(port: int | None, host: str = "127.0.0.1", *, daemon: str) -> int | None:
    """Serve /metrics on host:port in a background thread; returns the port (None: not served). A port
    already taken is logged and the daemon goes on: metrics must never stop payments."""
    if port is None:
        return None
    try:
        server, _ = start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("%s: metrics not served on %s:%s: %s", daemon, host, port, exc)
        return None
    DAEMON_UP.labels(daemon=daemon).set(1)
    bound = server.server_port
    log.info("%s: metrics on http://%s:%d/metrics", daemon, host, bound)
    return bound


class DatabaseCollector(Collector):
    """Reads the report views made for it (db/procedures/300_metrics.sql) on each scrape. The check of
    unbalanced journals reads the ledger fold and the journals posted since the scheduler last folded,
    which grow while no scheduler runs, so it runs at most every `ledger_check_s` seconds and its last
    answer is served in between."""

    def __init__(self, url: str, *, ledger_check_s: float = 15.0) -> None:
        self.url = url
        self.ledger_check_s = ledger_check_s
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._unbalanced: int | None = None
        self._ledger_checked_at = float("-inf")

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, autocommit=True, application_name="carrierpay metrics",
                                         connect_timeout=5)
            self._conn.execute(queries.READ_WITHOUT_JIT)
        return self._conn

    def collect(self):
        up = GaugeMetricFamily("carrierpay_database_up", "1 when the last scrape could read the database")
        with self._lock:
            try:
                families = self._read(self._connection())
            except psycopg.Error as exc:
                log.warning("database collector: %s", str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
                ERRORS.labels(daemon="metrics", kind="database_unavailable").inc()
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                up.add_metric([], 0)
                yield up
                return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self, conn: psycopg.Connection) -> list:
        queue = GaugeMetricFamily("carrierpay_queue_calls", "Queued carrier calls: ready now, later, leased",
                                  labels=["carrier", "state"])
        oldest = GaugeMetricFamily("carrierpay_queue_oldest_ready_seconds",
                                   "Age of the oldest call ready to send (0: none waiting)", labels=["carrier"])
        settled = GaugeMetricFamily("carrierpay_carrier_settled_calls_5m",
                                    "Calls settled in the last five minutes (minute rollup), by result",
                                    labels=["carrier", "result"])
        ratio = GaugeMetricFamily("carrierpay_carrier_success_ratio_5m",
                                  "Succeeded / (succeeded + failed) over the last five minutes", labels=["carrier"])
        latency = GaugeMetricFamily("carrierpay_carrier_latency_mean_5m_seconds",
                                    "Mean time from sending to settling over the last five minutes",
                                    labels=["carrier"])
        breaker = GaugeMetricFamily("carrierpay_breaker_open", "1 while the carrier's circuit breaker holds its calls",
                                    labels=["carrier"])
        trips = CounterMetricFamily("carrierpay_breaker_trips", "Circuit breaker trips so far", labels=["carrier"])
        paused = GaugeMetricFamily("carrierpay_carrier_paused", "1 while an operator pauses the carrier",
                                   labels=["carrier"])
        for row in conn.execute(queries.METRICS_CARRIERS).fetchall():
            (carrier, ready, later, leased, oldest_s, calls, succeeded, failed, errors, success, mean_s,
             state, trip_count, is_paused) = row
            queue.add_metric([carrier, "ready"], ready)
            queue.add_metric([carrier, "later"], later)
            queue.add_metric([carrier, "leased"], leased)
            oldest.add_metric([carrier], oldest_s)
            settled.add_metric([carrier, "all"], calls)
            settled.add_metric([carrier, "succeeded"], succeeded)
            settled.add_metric([carrier, "failed"], failed)
            settled.add_metric([carrier, "error"], errors)
            if success is not None:
                ratio.add_metric([carrier], success)
            if mean_s is not None:
                latency.add_metric([carrier], mean_s)
            breaker.add_metric([carrier], 1 if state == "open" else 0)
            trips.add_metric([carrier], trip_count)
            paused.add_metric([carrier], 1 if is_paused else 0)

        unsettled = GaugeMetricFamily("carrierpay_unsettled_calls",
                                      "Calls whose outcome is unknown or awaited, by age since created",
                                      labels=["carrier", "status", "age"])
        overdue = GaugeMetricFamily("carrierpay_unsettled_calls_overdue",
                                    "Unsettled calls more than 15 minutes past their reconciliation time",
                                    labels=["carrier", "status"])
        overdue_sums: dict[tuple[str, str], int] = {}
        for carrier, status, age, calls, late in conn.execute(queries.METRICS_UNSETTLED).fetchall():
            unsettled.add_metric([carrier, status, age], calls)
            overdue_sums[(carrier, status)] = overdue_sums.get((carrier, status), 0) + late
        for (carrier, status), late in overdue_sums.items():
            overdue.add_metric([carrier, status], late)

        pending, due, retrying, oldest_s = conn.execute(queries.METRICS_WEBHOOKS).fetchone()
        webhooks = GaugeMetricFamily("carrierpay_webhook_notifications", "Webhook notifications not delivered yet",
                                     labels=["state"])
        webhooks.add_metric(["pending"], pending)
        webhooks.add_metric(["due"], due)
        webhooks.add_metric(["retrying"], retrying)
        webhook_age = GaugeMetricFamily("carrierpay_webhook_oldest_pending_seconds",
                                        "Age of the oldest undelivered webhook notification")
        webhook_age.add_metric([], oldest_s)

        history = GaugeMetricFamily("carrierpay_history_unshipped", "Outbox rows not shipped to the history store yet",
                                    labels=["outbox"])
        history_age = GaugeMetricFamily("carrierpay_history_oldest_unshipped_seconds",
                                        "Age of the oldest unshipped outbox row", labels=["outbox"])
        for outbox, count, age_s in conn.execute(queries.METRICS_HISTORY).fetchall():
            history.add_metric([outbox], count)
            history_age.add_metric([outbox], age_s)

        if time.monotonic() - self._ledger_checked_at >= self.ledger_check_s:
            self._unbalanced = conn.execute(queries.METRICS_UNBALANCED_JOURNALS).fetchone()[0]
            self._ledger_checked_at = time.monotonic()
        unbalanced = GaugeMetricFamily("carrierpay_unbalanced_journals",
                                       "Journals whose entries do not sum to zero (must be 0)")
        unbalanced.add_metric([], self._unbalanced or 0)
        return [queue, oldest, settled, ratio, latency, breaker, trips, paused, unsettled, overdue, webhooks,
                webhook_age, history, history_age, unbalanced]


def serve_database(url: str, port: int, host: str = "127.0.0.1", *, ledger_check_s: float = 15.0,
                   stop: threading.Event | None = None) -> None:
    """`carrierpay metrics serve`: the database collector (and this process's own metrics) until `stop`."""
    collector = DatabaseCollector(url, ledger_check_s=ledger_check_s)
    REGISTRY.register(collector)
    try:
        if expose(port, host, daemon="metrics") is None:
            raise OSError(f"cannot serve metrics on {host}:{port}")
        (stop or threading.Event()).wait()
    finally:
        REGISTRY.unregister(collector)
