"""A daily subscription through opt-in, first charge, renewal, step-down retry and grace, on a single
node and through the front (`sql_api`: the scheduler then ticks every partition, as each partition's
own daemons do)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import psycopg
import pytest

from carrierpay import scheduler
from tests.core.world import claim, load_world, pin_sent_to, settle

pytestmark = pytest.mark.sql_api

MSISDN = "+2348020000043"  # a partition-1 number through the front: not the default partition


def scheduler_tick(urls: list[str]) -> scheduler.TickReport:
    """One scheduler tick on every database that serves the world (the node, or each partition)."""
    async def go():
        total = scheduler.TickReport()
        for url in urls:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as aconn:
                total.queued += (await scheduler.tick(aconn)).queued
        return total

    return asyncio.run(go())


def latest_charge(conn):
    return conn.execute(
        "select procedure_id, amount_minor, variant, status::text from cp.procedure "
        "where kind = 'charge' order by procedure_id desc limit 1"
    ).fetchone()


def test_daily_subscription_renews_steps_down_and_recovers(conn, node_urls):
    load_world(conn)
    sub = conn.execute("select api.subscribe('acme', %s, 'club', 'daily', 's1')", [MSISDN]).fetchone()[0]
    assert sub["status"] == "pending_optin" and "optin_id" in sub

    confirmed = conn.execute("select api.confirm_optin('acme', %s, %s)",
                             [sub["optin_id"], pin_sent_to(conn, MSISDN)]).fetchone()[0]
    assert confirmed["status"] == "confirmed"

    claim(conn, "test_ng")
    proc_id, amount, variant, _ = latest_charge(conn)
    assert (amount, variant) == (10000, "club_full")
    settle(conn, proc_id, "succeeded")
    state = conn.execute("select status::text, paid_through - (select anchor_local at time zone 'Africa/Lagos' "
                         "from cp.subscription), period_index from cp.subscription").fetchone()
    assert state == ("active", timedelta(days=1), 1)

    # Nothing is due before the period ends.
    assert scheduler_tick(node_urls).queued == 0
    conn.execute("select admin.advance_clock(interval '1 day 1 minute')")
    assert scheduler_tick(node_urls).queued == 1
    claim(conn, "test_ng")
    proc_id, amount, _, _ = latest_charge(conn)
    assert amount == 10000
    settle(conn, proc_id, "failed", "insufficient_funds")
    status, level, next_at, now = conn.execute(
        "select status::text, retry_level, next_charge_at, cp.clock_now() from cp.subscription").fetchone()
    assert (status, level) == ("retrying", 1)
    assert next_at >= now + timedelta(hours=1)

    # The retry charges the lower price point and delivers the variant that was paid.
    conn.execute("select admin.set_clock(%s)", [next_at + timedelta(minutes=1)])
    assert scheduler_tick(node_urls).queued == 1
    claim(conn, "test_ng")
    proc_id, amount, variant, _ = latest_charge(conn)
    assert (amount, variant) == (5000, "club_half")
    settle(conn, proc_id, "succeeded")
    assert conn.execute("select status::text, retry_level, period_index from cp.subscription").fetchone() == (
        "active", 0, 2)
    assert conn.execute("select variant from cp.entitlement order by entitlement_id desc limit 1").fetchone()[0] == (
        "club_half")
    # Every journal balances, whatever happened.
    assert conn.execute("select count(*) from (select journal_id from cp.ledger_entry group by 1 "
                        "having sum(amount_minor) <> 0) j").fetchone()[0] == 0


def test_unpaid_subscription_walks_through_grace_and_suspension_to_cancellation(conn, node_urls):
    load_world(conn)
    sub = conn.execute("select api.subscribe('acme', %s, 'club', 'daily', 's2')", [MSISDN]).fetchone()[0]
    conn.execute("select api.confirm_optin('acme', %s, %s)", [sub["optin_id"], pin_sent_to(conn, MSISDN)])
    claim(conn, "test_ng")
    settle(conn, latest_charge(conn)[0], "succeeded")

    seen = []
    for _ in range(200):
        due = conn.execute("select next_charge_at from cp.subscription").fetchone()[0]
        if due is None:
            break
        conn.execute("select admin.set_clock(%s)", [due + timedelta(minutes=1)])
        scheduler_tick(node_urls)
        if claim(conn, "test_ng"):
            settle(conn, latest_charge(conn)[0], "failed", "insufficient_funds")
        seen.append(conn.execute("select status::text from cp.subscription").fetchone()[0])
    assert seen[-1] == "cancelled", " ".join(seen)
    order = [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]
    assert order == ["retrying", "grace", "suspended", "cancelled"]
    history = [row[0] for row in conn.execute(
        "select payload->>'to' from cp.event where aggregate_type = 'subscription' order by event_id")]
    assert history == ["pending_optin", "active", "retrying", "grace", "suspended", "cancelled"]
    # No period ever had two live charges.
    assert conn.execute("select max(n) from (select count(*) n from cp.procedure where status <> 'failed' "
                        "and kind = 'charge' group by period_index) x").fetchone()[0] == 1
