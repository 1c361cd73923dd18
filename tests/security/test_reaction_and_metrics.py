"""Pauses, breakers and metrics as an attacker meets them: a merchant's own connection cannot pause,
resume or trip anything nor read the breaker tables, and the metrics endpoint, reached over raw HTTP,
shows no number, payment or secret and takes nothing but a scrape."""

from __future__ import annotations

import urllib.error
import urllib.request

import psycopg
import pytest
from prometheus_client import REGISTRY

from carrierpay import metrics
from tests.security.conftest import raises_sqlstate


@pytest.mark.parametrize("sql", [
    "select admin.pause_sending('carrier', 'test_ng', 'x')",
    "select admin.resume_sending('merchant', 'other')",
    "select admin.set_breaker('test_ng', '{\"error_pct\": 1, \"min_calls\": 1}')",
    "select sched.run_breakers()",
    "select sched.fold_rollups()",
    "select sched.fold_ledger()",
    "select * from cp.ledger_fold_balance",
    "select * from cp.ledger_straggler",
    "select cp.claim_gate(1)",
    "select * from cp.carrier_breaker",
    "select * from cp.claim_pause",
    "select * from cp.rollup_hour",
    "select * from report.metrics_carriers",
    "select * from report.carrier_breakers",
])
def test_a_merchant_can_neither_steer_nor_read_the_reaction(attacker, sql):
    with attacker.connect() as conn, raises_sqlstate("42501"):
        conn.execute(sql)


def test_a_merchant_cannot_pause_a_competitor_through_the_api(attacker, owner):
    """Nothing in api.* pauses: the competitor's calls keep flowing after every api call the attacker can make."""
    with attacker.connect() as conn:
        names = [row[0] for row in conn.execute(
            "select p.proname from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace "
            "where n.nspname = 'api'").fetchall()]
    assert not any("pause" in name or "breaker" in name or "resume" in name for name in names)
    assert owner.execute("select count(*) from cp.claim_pause").fetchone()[0] == 0


def test_the_metrics_endpoint_shows_no_subscriber_payment_or_secret(world_url, owner):
    owner.execute("select api.charge('acme', '+2348020000777', 'gems', 'sec-1')")
    secret = owner.execute("select webhook_secret from cp.merchant where code = 'acme'").fetchone()[0]
    collector = metrics.DatabaseCollector(world_url)
    REGISTRY.register(collector)
    try:
        port = metrics.expose(0, daemon="metrics")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            body = response.read().decode()
        assert 'carrierpay_queue_calls{carrier="test_ng",state="ready"} 1.0' in body
        assert "2348020000777" not in body and "sec-1" not in body and secret not in body
        assert "password" not in body.lower() and world_url.split("@")[0].split(":")[-1] not in body
        # Only reading: a POST changes nothing and a path other than the scrape holds nothing of ours.
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x=1", method="POST")
        try:
            urllib.request.urlopen(request, timeout=10).read()
        except urllib.error.HTTPError:
            pass
        assert owner.execute("select count(*) from cp.claim_pause").fetchone()[0] == 0
    finally:
        REGISTRY.unregister(collector)


def test_the_collector_needs_only_the_reporter_role(world_url):
    url = world_url + ("&" if "?" in world_url else "?") + "options=-c%20role%3Dcarrierpay_reporter"
    with psycopg.connect(url, autocommit=True) as conn, raises_sqlstate("42501"):
        conn.execute("select * from cp.carrier_breaker")
    collector = metrics.DatabaseCollector(url)
    names = {family.name for family in collector.collect()}
    assert {"carrierpay_database_up", "carrierpay_queue_calls", "carrierpay_unbalanced_journals"} <= names
    assert next(f for f in collector.collect() if f.name == "carrierpay_database_up").samples[0].value == 1
