"""Prometheus metrics: the database collector reports what the database holds (through the reporter
role only), the scheduler trips a breaker with a log line and a metric, and /metrics is served."""

from __future__ import annotations

import asyncio
import logging
import urllib.request

import psycopg
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from carrierpay import metrics, scheduler
from tests.core.world import load_world


def _samples(registry) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _reporter(url: str) -> str:
    """The same database as the read-only reporter role (what `carrierpay metrics serve` needs)."""
    return url + ("&" if "?" in url else "?") + "options=-c%20role%3Dcarrierpay_reporter"


def _settle_some(conn: psycopg.Connection) -> None:
    """Five charges on test_ng: one succeeded, one failed, one unknown (a third of the answers are errors),
    one leased, one still queued."""
    ids = [conn.execute("select (api.charge('acme', %s, 'gems', %s)->>'id')::bigint",
                        [f"+234802000{100 + i}", f"m{i}"]).fetchone()[0] for i in range(5)]
    conn.execute("select adapter.claim_calls('test_ng', 4, interval '1 hour', 'test')")
    for procedure_id, outcome in zip(ids, ("succeeded", "failed", "unknown"), strict=False):
        conn.execute("select pg_temp.settle(%s, %s, %s)",
                     [procedure_id, outcome, "insufficient_funds" if outcome == "failed" else None])


def test_the_database_collector_reports_what_the_tables_hold(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        load_world(conn)
        _settle_some(conn)
        conn.execute("select sched.fold_rollups()")
        queued = conn.execute("select count(*) from cp.call_queue q join cp.carrier k using (carrier_id) "
                              "where k.code = 'test_ng' and q.lease_until is null").fetchone()[0]
        leased = conn.execute("select count(*) from cp.call_queue q join cp.carrier k using (carrier_id) "
                              "where k.code = 'test_ng' and q.lease_until is not null").fetchone()[0]
    registry = CollectorRegistry()
    registry.register(metrics.DatabaseCollector(_reporter(db_url)))
    samples = _samples(registry)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("carrierpay_database_up") == 1
    assert (queued, leased) == (1, 1)
    assert value("carrierpay_queue_calls", carrier="test_ng", state="ready") == queued
    assert value("carrierpay_queue_calls", carrier="test_ng", state="leased") == leased
    assert value("carrierpay_queue_calls", carrier="test_gb", state="ready") == 0
    assert value("carrierpay_carrier_settled_calls_5m", carrier="test_ng", result="succeeded") == 1
    assert value("carrierpay_carrier_settled_calls_5m", carrier="test_ng", result="failed") == 1
    assert value("carrierpay_carrier_success_ratio_5m", carrier="test_ng") == 0.5
    assert value("carrierpay_unsettled_calls", carrier="test_ng", status="unknown", age="under_5m") == 1
    assert value("carrierpay_breaker_open", carrier="test_ng") == 0
    assert value("carrierpay_unbalanced_journals") == 0
    assert value("carrierpay_history_unshipped", outbox="event") > 0
    assert ("carrierpay_webhook_notifications", (("state", "pending"),)) in samples
    # No label names a subscriber, a payment or a call.
    assert not any(label in {"msisdn", "payment", "procedure_id", "call_id"}
                   for _, labels in samples for label, _ in labels)


def test_the_collector_reads_the_views_without_jit(db_url):
    """Its views that look up each open payment are costed above jit_above_cost; compiling took longer
    than running them."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        load_world(conn)
    collector = metrics.DatabaseCollector(_reporter(db_url))
    assert collector._connection().execute("show jit").fetchone()[0] == "off"


def test_an_unreachable_database_is_a_metric_not_a_crash():
    registry = CollectorRegistry()
    registry.register(metrics.DatabaseCollector("postgresql://nobody@127.0.0.1:9/none?connect_timeout=1"))
    assert _samples(registry)[("carrierpay_database_up", ())] == 0


def test_the_scheduler_trips_a_breaker_with_a_line_and_a_metric(db_url, caplog):
    with psycopg.connect(db_url, autocommit=True) as conn:
        load_world(conn)
        conn.execute("""select admin.set_breaker('test_ng', '{"min_calls": 3, "error_pct": 30}')""")
        _settle_some(conn)
    before = metrics.BREAKER_CHANGES.labels(carrier="test_ng", state="open")._value.get()
    with caplog.at_level(logging.WARNING, logger="carrierpay.scheduler"):
        asyncio.run(scheduler.run(db_url, once=True))
    assert any("carrier test_ng: circuit breaker tripped, calls held" in r.getMessage() for r in caplog.records)
    assert metrics.BREAKER_CHANGES.labels(carrier="test_ng", state="open")._value.get() == before + 1
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("select adapter.claim_calls('test_ng', 10, interval '1 minute', 'w')").fetchall() == []
        assert conn.execute("select state, trips from report.carrier_breakers where carrier = 'test_ng'"
                            ).fetchone() == ("open", 1)
    registry = CollectorRegistry()
    registry.register(metrics.DatabaseCollector(_reporter(db_url)))
    assert _samples(registry)[("carrierpay_breaker_open", (("carrier", "test_ng"),))] == 1


def test_a_daemon_serves_its_metrics_over_http():
    port = metrics.expose(0, daemon="adapters")
    assert port
    metrics.CALLS_SENT.labels(carrier="test_gb", operation="charge").inc()
    metrics.CALL_DURATION.labels(carrier="test_gb", operation="charge").observe(0.2)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body = response.read().decode()
    assert 'carrierpay_daemon_up{daemon="adapters"} 1.0' in body
    assert 'carrierpay_carrier_calls_sent_total{carrier="test_gb",operation="charge"}' in body
    assert 'carrierpay_carrier_call_duration_seconds_bucket{carrier="test_gb",le="0.25",operation="charge"}' in body


def test_unsettled_calls_by_age_are_read_through_the_partial_index_of_unsettled_calls(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        load_world(conn)
        conn.execute("set enable_seqscan = off")  # else a whole index of every call would do as well
        plan = conn.execute("explain (format json) select * from report.metrics_unsettled_calls").fetchone()[0]
        assert "carrier_call_to_reconcile" in str(plan)
