"""Report and dashboard queries at scale: how long each takes with N payments in the database, and
how fast sched.fold_rollups folds them.

    PYTHONPATH=$PWD python -m carrierpay.benchmarks.reports --procedures 10000000

Builds the population set-based (generate_series; triggers and foreign-key checks off for the load
only, `session_replication_role = replica`): 4 carriers, 3 merchants with 2 products each, one
subscriber per 20 payments, each with a subscription (created with the triggers on, so its events and
counts are there; most active, a fifth cancelled), N settled charge procedures spread over 30 days
(80% succeeded, 20% failed) each with its carrier call, their ledger (a journal of the split per
collected charge), refunds of 1% of the collected ones with their reversing journals, and the work
still open (--open-share of N, 0.1% by default): charges of the last day, most of them minutes old,
queued, leased, awaiting a callback or unknown before their next reconciliation turn, and one in ten
older and past its third turn (the operator's queue). Then folds everything (`sched.fold_rollups`,
then `sched.fold_ledger`, in batches, timed), measures one steady-state fold of fresh calls and
journals, and times what the dashboard's endpoints and the metrics collector run and every view of
schema report, as their readers do (JIT off): p50 and p95 of --runs runs after one warm-up, with the
load average before and after. Runs on CARRIERPAY_DATABASE_URL (a server we may create databases on)
or on a throwaway embedded cluster.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import time
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from carrierpay import migrate, queries
from carrierpay.benchmarks.sched import Server

NOW = datetime(2030, 4, 3, 12, tzinfo=UTC)
DAYS = 30
CARRIERS = [("rb_ng", "NG", "NGN", "Africa/Lagos", 10000), ("rb_pk", "PK", "PKR", "Asia/Karachi", 2000),
            ("rb_ke", "KE", "KES", "Africa/Nairobi", 1000), ("rb_za", "ZA", "ZAR", "Africa/Johannesburg", 500)]
MERCHANTS = ("alpha", "beta", "gamma")

SETUP_SQL = """
insert into cp.subscriber (msisdn, carrier_id)
select '+99' || (i %% 4) || lpad(i::text, 10, '0'),
       (select carrier_id from cp.carrier order by carrier_id offset (i %% 4) limit 1)
from generate_series(1, %(subscribers)s::bigint) i
"""

# What a generated charge's terms are picked from: each carrier's price points numbered from 0 (j), with
# their product and merchant, and the subscribers' count and first id.
_TERMS = """
with pp as (
    select row_number() over (partition by pp.carrier_id order by pp.price_point_id) - 1 as j, pp.price_point_id,
           pp.product_id, p.merchant_id, pp.carrier_id, pp.amount_minor, pp.currency
    from cp.price_point pp join cp.product p using (product_id)
), nsub as (select count(*) as n, min(subscriber_id) as first from cp.subscriber),"""

# One charge per row of the series: carrier by subscriber, merchant and product by hash, the time
# spread over the 30 days, and the outcome from a second hash.
PROCEDURES_SQL = _TERMS + """
g as (
    select i, (hashint8(i) & 2147483647) %% 10000 as r, (hashint8(i + 99) & 2147483647) as h,
           nsub.first + i %% nsub.n as subscriber_id
    from generate_series(%(lo)s::bigint, %(hi)s::bigint) i cross join nsub
)
insert into cp.procedure (kind, status, merchant_id, subscriber_id, carrier_id, product_id, price_point_id,
                          amount_minor, currency, collected_minor, created_at, updated_at, final_at)
select 'charge',
       (case when g.r < 8000 then 'succeeded' else 'failed' end)::cp.procedure_status,
       pp.merchant_id, s.subscriber_id, pp.carrier_id, pp.product_id, pp.price_point_id, pp.amount_minor,
       pp.currency, case when g.r < 8000 then pp.amount_minor else 0 end, t.at, t.at, t.at + interval '2 seconds'
from g
join cp.subscriber s on s.subscriber_id = g.subscriber_id
join pp on pp.carrier_id = s.carrier_id and pp.j = g.h %% 6
cross join lateral (select %(now)s::timestamptz
                           - make_interval(secs => (g.h %% (%(days)s::numeric * 86400))::float8) as at) t
"""

CALLS_SQL = """
insert into cp.carrier_call (call_id, procedure_id, carrier_id, operation, pattern, safe_to_repeat, status,
                             correlator, outcome, reason, created_at, finished_at, sent_at, next_reconcile_at, lease_no)
overriding system value
select p.call_id, p.procedure_id, p.carrier_id, 'charge', 'sync', false,
       (case p.status when 'succeeded' then 'done' when 'failed' then 'failed'
             else case when p.procedure_id %% 2 = 0 then 'unknown' else 'awaiting_result' end end)::cp.call_status,
       'cp-' || p.call_id,
       case p.status when 'succeeded' then 'succeeded' when 'failed' then 'failed' end,
       case when p.status = 'failed' then 'insufficient_funds' end,
       p.created_at, p.final_at, p.created_at + %(offset)s::interval,
       case when p.status = 'unknown' then p.created_at + interval '5 minutes' end, 1
from (select nextval(pg_get_serial_sequence('cp.carrier_call', 'call_id')) as call_id, p.*
      from cp.procedure p where p.procedure_id between %(lo)s and %(hi)s order by p.procedure_id) p;
"""

REFUNDS_SQL = """
with r as (
    insert into cp.procedure (kind, status, merchant_id, subscriber_id, carrier_id, product_id, parent_id,
                              amount_minor, currency, created_at, updated_at, final_at)
    select 'refund', 'succeeded', p.merchant_id, p.subscriber_id, p.carrier_id, p.product_id, p.procedure_id,
           p.amount_minor, p.currency, p.final_at + interval '1 hour', p.final_at + interval '1 hour',
           p.final_at + interval '1 hour'
    from cp.procedure p where p.kind = 'charge' and p.status = 'succeeded' and p.procedure_id %% 100 = 7
    returning procedure_id, carrier_id, created_at
)
insert into cp.carrier_call (call_id, procedure_id, carrier_id, operation, pattern, safe_to_repeat, status,
                             correlator, outcome, created_at, finished_at, sent_at, lease_no)
overriding system value
select r.call_id, r.procedure_id, r.carrier_id, 'refund', 'sync', true, 'done', 'cp-' || r.call_id, 'succeeded',
       r.created_at, r.created_at + interval '1 second', r.created_at + %(offset)s::interval, 1
from (select nextval(pg_get_serial_sequence('cp.carrier_call', 'call_id')) as call_id, r.* from r) r
"""
REFUNDED_SQL = """
update cp.procedure p set refunded_minor = p.collected_minor, status = 'refunded'
where p.kind = 'charge' and p.status = 'succeeded' and p.procedure_id % 100 = 7
"""
# The work still open when the reports are read, as a live database holds it: charges of the last
# day (most of them minutes old) queued, leased to an adapter, awaiting a callback or unknown and
# waiting for their next reconciliation turn; and one in ten older, unknown after their third turn
# (the operator's queue). Each with its open call, and the queue row of a queued or leased one.
OPEN_SQL = _TERMS + """
g as (
    select i, (hashint8(i + 5) & 2147483647) %% 100 as k, (hashint8(i + 99) & 2147483647) as h,
           (hashint8(i + 3) & 2147483647)::float8 / 2147483647 as u, nsub.first + (hashint8(i) & 2147483647) %% nsub.n
               as subscriber_id
    from generate_series(1, %(open)s::bigint) i cross join nsub
), o as (
    select g.*, case when g.k < 10 then 'queued' when g.k < 15 then 'leased' when g.k < 55 then 'awaiting_result'
                     else 'unknown' end as call_status,
           case when g.i %% 10 = 0 then %(now)s::timestamptz - make_interval(days => 1 + (g.h %% 29)::int)
                else %(now)s::timestamptz - make_interval(secs => 86400 * g.u ^ 4) end as at
    from g
), proc as (
    insert into cp.procedure (kind, status, merchant_id, subscriber_id, carrier_id, product_id, price_point_id,
                              amount_minor, currency, created_at, updated_at)
    select 'charge', (case o.call_status when 'queued' then 'pending' when 'unknown' then 'unknown'
                      else 'in_flight' end)::cp.procedure_status,
           pp.merchant_id, s.subscriber_id, pp.carrier_id, pp.product_id, pp.price_point_id, pp.amount_minor,
           pp.currency, o.at, o.at
    from o
    join cp.subscriber s on s.subscriber_id = o.subscriber_id
    join pp on pp.carrier_id = s.carrier_id and pp.j = o.h %% 6
    returning procedure_id, carrier_id, status, created_at
), call as (
    insert into cp.carrier_call (call_id, procedure_id, carrier_id, operation, pattern, safe_to_repeat, status,
                                 correlator, created_at, sent_at, reconcile_attempts, next_reconcile_at, lease_no)
    overriding system value
    select x.call_id, x.procedure_id, x.carrier_id, 'charge', 'sync', false, x.call_status::cp.call_status,
           'cp-' || x.call_id, x.created_at,
           case when x.call_status <> 'queued' then x.created_at + %(offset)s::interval end, x.turns,
           case when x.call_status in ('awaiting_result', 'unknown')
                then x.created_at + case x.turns when 0 then interval '5 minutes' when 1 then interval '1 hour'
                                                 else interval '1 day' end end,
           case when x.call_status = 'queued' then 0 else 1 end
    from (select nextval(pg_get_serial_sequence('cp.carrier_call', 'call_id')) as call_id, p.*,
                 case when p.status = 'pending' then 'queued'
                      when p.status = 'unknown' then 'unknown'
                      when %(now)s::timestamptz - p.created_at < interval '1 minute' then 'leased'
                      else 'awaiting_result' end as call_status,
                 case when %(now)s::timestamptz - p.created_at < interval '5 minutes' then 0
                      when %(now)s::timestamptz - p.created_at < interval '1 hour' then 1
                      when %(now)s::timestamptz - p.created_at < interval '1 day' then 2 else 3 end as turns
          from proc p) x
    returning call_id, carrier_id, status, created_at
)
insert into cp.call_queue (call_id, carrier_id, available_at, lease_until, worker, charging_hours)
select c.call_id, c.carrier_id, greatest(c.created_at, %(now)s::timestamptz - interval '1 minute'),
       case when c.status = 'leased' then %(now)s::timestamptz + interval '30 seconds' end,
       case when c.status = 'leased' then 'bench' end, true
from call c where c.status in ('queued', 'leased')
"""

# Subscriptions as a live base holds them: one per subscriber, most active, some retrying, in grace,
# suspended or cancelled.
SUBSCRIPTIONS_SQL = """
with pp as (
    select row_number() over (partition by pp.carrier_id order by pp.price_point_id) - 1 as j, pp.price_point_id,
           pp.product_id, p.merchant_id, pp.carrier_id
    from cp.price_point pp join cp.product p using (product_id)
), s as (
    select s.subscriber_id, s.carrier_id, (hashint8(s.subscriber_id + 11) & 2147483647) %% 100 as k,
           (hashint8(s.subscriber_id + 13) & 2147483647) as h
    from cp.subscriber s
), x as (
    select s.*, (case when s.k < 68 then 'active' when s.k < 73 then 'retrying' when s.k < 76 then 'grace'
                      when s.k < 78 then 'suspended' when s.k < 98 then 'cancelled' else 'pending_optin' end)
                 ::cp.subscription_status as status,
           %(now)s::timestamptz - make_interval(secs => (s.h %% (%(days)s * 86400))::float8) as since
    from s
)
insert into cp.subscription (merchant_id, subscriber_id, product_id, plan, status, price_point_id, carrier_id,
                             period_index, next_charge_at, status_since, cancel_reason, cancelled_at, created_at)
select pp.merchant_id, x.subscriber_id, pp.product_id, 'daily', x.status, pp.price_point_id, x.carrier_id,
       (x.h %% 30)::int,
       case when x.status in ('active', 'retrying', 'grace', 'suspended')
            then %(now)s::timestamptz + make_interval(secs => (x.h %% 86400)::float8) end,
       x.since, case when x.status = 'cancelled' then (case when x.k < 88 then 'user' else 'unpaid' end) end,
       case when x.status = 'cancelled' then x.since end, x.since - interval '1 day'
from x join pp on pp.carrier_id = x.carrier_id and pp.j = x.h %% 6
"""

# The ledger as the payment path writes it: one journal per collected charge, its five entries split
# by cp.split_amount onto the accounts cp.post_charge_journals books (that function, built for
# batches of a few hundred, is restated set-based here for a million at a time), and for each refund
# (all full, one per charge) the reversing journal cp.post_refund_journal books: every entry negated.
ACCOUNTS_SQL = """
select count(cp.ledger_account_id(x.kind, x.currency, x.carrier_id, x.merchant_id, x.country))
from (select distinct w.*
      from cp.price_point pp join cp.product p using (product_id) join cp.carrier k on k.carrier_id = pp.carrier_id
      cross join lateral (values ('carrier_receivable'::cp.account_kind, pp.currency::text, k.carrier_id,
                                  null::integer, null::text),
                                 ('tax_payable', pp.currency, null, null, k.country::text),
                                 ('carrier_share', pp.currency, k.carrier_id, null, null),
                                 ('platform_revenue', pp.currency, null, null, null),
                                 ('merchant_payable', pp.currency, null, p.merchant_id, null))
          w(kind, currency, carrier_id, merchant_id, country)) x
"""
CHARGE_JOURNALS_SQL = """
with charge as materialized (
    select p.procedure_id, p.currency, p.collected_minor, p.merchant_id, k.carrier_id, k.country,
           s.tax, s.carrier_share, s.platform_fee, s.merchant_net
    from cp.procedure p
    join cp.carrier k on k.carrier_id = p.carrier_id
    join cp.country y on y.country = k.country
    join cp.merchant m on m.merchant_id = p.merchant_id
    cross join lateral cp.split_amount(p.collected_minor, y.vat_bp, k.carrier_share_bp, m.platform_fee_bp) s
    where p.procedure_id between %(lo)s and %(hi)s and p.kind = 'charge' and p.collected_minor <> 0
), line as materialized (
    select c.procedure_id, w.*
    from charge c
    cross join lateral (values
        (1, 'carrier_receivable'::cp.account_kind, c.currency, c.carrier_id, 0, '', c.collected_minor),
        (2, 'tax_payable', c.currency, 0, 0, c.country::text, -c.tax),
        (3, 'carrier_share', c.currency, c.carrier_id, 0, '', -c.carrier_share),
        (4, 'platform_revenue', c.currency, 0, 0, '', -c.platform_fee),
        (5, 'merchant_payable', c.currency, 0, c.merchant_id, '', -c.merchant_net)
    ) as w(ord, kind, currency, carrier_id, merchant_id, country, amount_minor)
    where w.amount_minor <> 0
), journal as (
    insert into cp.journal (procedure_id, kind, currency, posted_at)
    select c.procedure_id, 'charge', c.currency, %(now)s::timestamptz from charge c order by c.procedure_id
    returning journal_id, procedure_id
)
insert into cp.ledger_entry (journal_id, account_id, amount_minor)
select j.journal_id, a.account_id, l.amount_minor
from line l
join cp.ledger_account a on a.kind = l.kind and a.currency = l.currency
     and coalesce(a.carrier_id, 0) = l.carrier_id and coalesce(a.merchant_id, 0) = l.merchant_id
     and coalesce(a.country, '') = l.country
join journal j on j.procedure_id = l.procedure_id
"""
REFUND_JOURNALS_SQL = """
with refund as materialized (
    select r.procedure_id, r.parent_id, r.currency from cp.procedure r
    where r.kind = 'refund' and r.status = 'succeeded'
), journal as (
    insert into cp.journal (procedure_id, kind, currency, posted_at)
    select r.procedure_id, 'refund', r.currency, %(now)s::timestamptz from refund r order by r.procedure_id
    returning journal_id, procedure_id
)
insert into cp.ledger_entry (journal_id, account_id, amount_minor)
select j.journal_id, e.account_id, -e.amount_minor
from refund r
join journal j on j.procedure_id = r.procedure_id
-- the charge's journal and its entries by key (limit 1 keeps it a lookup, never a join over the ledger)
cross join lateral (select c.journal_id from cp.journal c where c.procedure_id = r.parent_id and c.kind = 'charge'
                    limit 1) c
cross join lateral (select e.account_id, e.amount_minor from cp.ledger_entry e where e.journal_id = c.journal_id
                    limit 10) e
"""
POPULATION_SQL = """
select (select count(*) from cp.journal), (select count(*) from cp.ledger_entry),
       (select count(*) from cp.subscription),
       count(*) filter (where status = 'queued'), count(*) filter (where status = 'leased'),
       count(*) filter (where status = 'awaiting_result'), count(*) filter (where status = 'unknown'),
       count(*) filter (where status = 'unknown' and reconcile_attempts >= 3)
from cp.carrier_call where status not in ('done', 'failed')
"""
# A fold that also re-checks every remembered straggler, whatever the cadence.
FOLD_EVERYTHING = "select sched.fold_rollups(50000, interval '0 seconds', interval '0 seconds')"
FOLD_LEDGER = "select sched.fold_ledger(%s)"
LEDGER_PROGRESS = "select checked_through, (select max(journal_id) from cp.journal) from cp.ledger_fold"
# The load only: no trigger (events, state checks) and no foreign-key check per row.
REPLICA = "set session_replication_role = replica"


def _onboard(conn: psycopg.Connection) -> None:
    conn.execute("select admin.set_clock(%s)", [NOW])
    for i, (code, country, currency, tz, _price) in enumerate(CARRIERS):
        spec = {"code": code, "name": code, "country": country, "mcc": "999", "mnc": f"{i:02d}", "currency": currency,
                "timezone": tz, "number_ranges": [f"+99{i}"], "regulation": "DEFAULT",
                "operations": {"charge": {"pattern": "sync"}, "refund": {"pattern": "sync"}}}
        conn.execute("select admin.onboard_carrier(%s)", [Jsonb(spec)])
    for merchant in MERCHANTS:
        conn.execute("select admin.add_merchant(%s, %s)", [merchant, merchant.title()])
        for product in ("gems", "coins"):
            conn.execute("select admin.add_product(%s, %s, %s)", [merchant, product, product.title()])
            for code, _, currency, _, price in CARRIERS:
                conn.execute("select admin.add_price_point(%s, %s, 'one_time', %s, %s, %s, p_carrier => %s)",
                             [merchant, product, price, currency, f"{product}_{code}", code])


def _timed(out, label: str, action) -> float:
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    out(f"  {label:<44} {seconds:9.2f} s")
    return seconds


def populate(url: str, procedures: int, out, open_share: float, chunk: int = 1_000_000) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        _onboard(conn)
        conn.execute(REPLICA)
        offset = conn.execute("select cp.clock_now() - now()").fetchone()[0]
        subscribers = max(1, procedures // 20)
        _timed(out, f"{subscribers:,} subscribers", lambda: conn.execute(SETUP_SQL, {"subscribers": subscribers}))
        # With the triggers, as the payment path creates them: their events and their counts.
        conn.execute("set session_replication_role = origin")
        _timed(out, f"{subscribers:,} subscriptions", lambda: conn.execute(
            SUBSCRIPTIONS_SQL, {"now": NOW, "days": DAYS}))
        conn.execute(REPLICA)
        for lo in range(1, procedures + 1, chunk):
            hi = min(procedures, lo + chunk - 1)
            _timed(out, f"charges {lo:,}-{hi:,}", lambda lo=lo, hi=hi: conn.execute(
                PROCEDURES_SQL, {"lo": lo, "hi": hi, "now": NOW, "days": DAYS}))
        first = conn.execute("select min(procedure_id) from cp.procedure").fetchone()[0]
        for lo in range(first, first + procedures, chunk):
            _timed(out, f"calls {lo - first + 1:,}-{min(procedures, lo - first + chunk):,}",
                   lambda lo=lo: conn.execute(CALLS_SQL, {"lo": lo, "hi": lo + chunk - 1, "offset": offset}))
        _timed(out, "refunds (1% of collected)", lambda: conn.execute(REFUNDS_SQL, {"offset": offset}))
        conn.execute(ACCOUNTS_SQL)
        conn.execute("set work_mem = '256MB'")
        for lo in range(first, first + procedures, chunk):
            _timed(out, f"charge journals {lo - first + 1:,}-{min(procedures, lo - first + chunk):,}",
                   lambda lo=lo: conn.execute(CHARGE_JOURNALS_SQL, {"lo": lo, "hi": lo + chunk - 1, "now": NOW}))
        _timed(out, "analyze", lambda: conn.execute("analyze cp.procedure, cp.journal, cp.ledger_entry"))
        _timed(out, "refund journals", lambda: conn.execute(REFUND_JOURNALS_SQL, {"now": NOW}))
        _timed(out, "refunded charges", lambda: conn.execute(REFUNDED_SQL))
        opened = round(procedures * open_share)
        _timed(out, f"{opened:,} open charges", lambda: conn.execute(
            OPEN_SQL, {"open": opened, "now": NOW, "offset": offset}))
        _timed(out, "vacuum analyze", lambda: conn.execute("vacuum analyze"))


def fold_all(url: str, out, batch: int) -> tuple[int, float]:
    """Fold everything; returns (calls folded, seconds)."""
    total, started = 0, time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            t = time.perf_counter()
            folded = conn.execute("select sched.fold_rollups(%s, interval '0 seconds')", [batch]).fetchone()[0]
            through = conn.execute("select folded_through from report.rollup_progress").fetchone()[0]
            top = conn.execute("select max(call_id) from cp.carrier_call").fetchone()[0]
            total += folded
            out(f"  fold: {folded:>9,} calls in {time.perf_counter() - t:6.2f} s (through call {through:,} of {top:,})")
            if through >= top:
                break
        conn.execute("vacuum analyze cp.rollup_hour, cp.rollup_minute, cp.rollup_straggler, cp.rollup_state")
    return total, time.perf_counter() - started


def fold_ledger(url: str, out, batch: int) -> tuple[int, float]:
    """Fold every journal into the ledger fold (sched.fold_ledger in batches); returns (journals, seconds)."""
    total, started = 0, time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("set work_mem = '256MB'")
        while True:
            t = time.perf_counter()
            folded = conn.execute(FOLD_LEDGER, [batch]).fetchone()[0]
            through, top = conn.execute(LEDGER_PROGRESS).fetchone()
            total += folded
            out(f"  ledger fold: {folded:>9,} journals in {time.perf_counter() - t:6.2f} s "
                f"(through journal {through:,} of {top or 0:,})")
            if through >= (top or 0):
                break
        conn.execute("vacuum analyze cp.ledger_fold, cp.ledger_fold_balance, cp.ledger_straggler, cp.ledger_unbalanced")
    return total, time.perf_counter() - started


def _fresh_calls(conn: psycopg.Connection, calls: int) -> None:
    top = conn.execute("select max(procedure_id) from cp.procedure").fetchone()[0]
    offset = conn.execute("select cp.clock_now() - now()").fetchone()[0]
    conn.execute(PROCEDURES_SQL, {"lo": 1, "hi": calls, "now": NOW, "days": 0.01})
    conn.execute(CALLS_SQL, {"lo": top + 1, "hi": top + 2 * calls, "offset": offset})


def steady_fold(url: str, out, calls: int = 10_000) -> float:
    """One fold of `calls` fresh settled calls on top of the population (what each scheduler tick does),
    then one that also re-checks every remembered straggler (what a tick does once a minute)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(REPLICA)
        conn.execute(FOLD_EVERYTHING)
        stragglers = conn.execute("select stragglers from report.rollup_progress").fetchone()[0]
        _fresh_calls(conn, calls)
        started = time.perf_counter()
        folded = conn.execute("select sched.fold_rollups(50000, interval '0 seconds')").fetchone()[0]
        seconds = time.perf_counter() - started
        out(f"  steady fold of {folded:,} fresh calls: {seconds * 1000:.1f} ms ({stragglers:,} stragglers remembered)")
        _fresh_calls(conn, calls)
        started = time.perf_counter()
        folded = conn.execute(FOLD_EVERYTHING).fetchone()[0]
        out(f"  fold of {folded:,} fresh calls re-checking every straggler: "
            f"{(time.perf_counter() - started) * 1000:.1f} ms")
        # The journals of the fresh charges that succeeded, as the payment path posts them, then one ledger fold.
        top = conn.execute("select max(procedure_id) from cp.procedure").fetchone()[0]
        conn.execute(CHARGE_JOURNALS_SQL, {"lo": top - 2 * calls, "hi": top, "now": NOW})
        started = time.perf_counter()
        folded = conn.execute(FOLD_LEDGER, [50000]).fetchone()[0]
        out(f"  ledger fold of {folded:,} fresh journals: {(time.perf_counter() - started) * 1000:.1f} ms")
        return seconds


# Views that are audits over whole tables by design, run by hand or by the benchmark's own checks,
# never by a dashboard or a scrape: timed once.
AUDITS = {"report.dangling_references", "report.ledger_audit"}
# An hourly fact view read whole is an export of its history, not a dashboard or report query: its rows
# are bounded by hours x dimensions, its readers filter on `hour`, and its time is that of moving the rows
# to the client (the table alone, without the view's joins, is timed beside it as the floor). Timed, and
# counted apart.
EXPORTS = {"report.hourly_calls": "select * from cp.rollup_hour"}


def _load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def query_times(url: str, out, runs: int = 10) -> list[tuple[str, float]]:
    """Time what the dashboard's endpoints and the metrics collector run, then every view of schema
    report (whole, as `carrierpay report` reads it): p50 and p95 of `runs` runs after one warm-up."""
    week = {"from": NOW - timedelta(days=7), "to": NOW}
    day = {"from": NOW - timedelta(days=1), "to": NOW}
    month = {"from": NOW - timedelta(days=DAYS + 1), "to": NOW + timedelta(hours=1)}
    measured = [
        ("dashboard: clock", queries.DASHBOARD_CLOCK, None),
        ("dashboard: success by hour, 24 h", queries.DASHBOARD_SUCCESS, day),
        ("dashboard: success by hour, 7 days", queries.DASHBOARD_SUCCESS, week),
        ("dashboard: success by hour, 30 days", queries.DASHBOARD_SUCCESS, month),
        ("dashboard: revenue by hour, 7 days", queries.DASHBOARD_REVENUE, week),
        ("dashboard: revenue by hour, 30 days", queries.DASHBOARD_REVENUE, month),
        ("dashboard: totals per carrier, 30 days", queries.DASHBOARD_TOTALS, month),
        ("dashboard: best hours heat map", queries.DASHBOARD_BEST_HOURS, None),
        ("dashboard: carriers (queue, latency, breaker)", queries.DASHBOARD_CARRIERS, None),
        ("dashboard: unsettled calls by age", queries.DASHBOARD_UNSETTLED, None),
        ("metrics: carriers", queries.METRICS_CARRIERS, None),
        ("metrics: unsettled calls", queries.METRICS_UNSETTLED, None),
        ("metrics: webhooks", queries.METRICS_WEBHOOKS, None),
        ("metrics: history lag", queries.METRICS_HISTORY, None),
        ("metrics: unbalanced journals", queries.METRICS_UNBALANCED_JOURNALS, None),
        ("breakers", queries.CARRIER_BREAKERS, None),
        ("report.hourly_calls, one day", "select * from report.hourly_calls where hour >= %(from)s "
                                         "and hour < %(to)s", day),
    ]
    with psycopg.connect(url, autocommit=True) as conn:
        views = [r[0] for r in conn.execute(
            "select format('%I.%I', n.nspname, c.relname) from pg_catalog.pg_class c "
            "join pg_catalog.pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = 'report' and c.relkind = 'v' order by c.relname")]
    named = {v: k for k, v in queries.REPORT_VIEWS.items()}
    for view in views:
        sql = queries.report_view(named[view]) if view in named else f"select * from {view}"
        measured.append((view, sql, None))
    results = []
    out(f"  ({_load()})")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(queries.READ_WITHOUT_JIT)  # as every reader of the views does
        for label, sql, params in measured:
            if label in AUDITS:
                started = time.perf_counter()
                rows = conn.execute(sql, params).fetchall()
                out(f"  {label:<46} once {(time.perf_counter() - started) * 1000:9.2f} ms  ({len(rows)} rows; "
                    f"an audit, not a dashboard query)")
                continue
            started = time.perf_counter()
            conn.execute(sql, params).fetchall()  # warm-up
            slow = time.perf_counter() - started > 1  # a whole-table read: three runs tell enough
            times = []
            for _ in range(3 if slow else runs):
                started = time.perf_counter()
                rows = conn.execute(sql, params).fetchall()
                times.append(time.perf_counter() - started)
            times.sort()
            p50 = statistics.median(times)
            p95 = times[min(len(times) - 1, max(0, round(0.95 * len(times)) - 1))]
            out(f"  {label:<46} p50 {p50 * 1000:8.2f} ms  p95 {p95 * 1000:8.2f} ms  ({len(rows)} rows"
                + ("; a whole-history export)" if label in EXPORTS else ")"))
            results.append((label, p50, p95))
        for view, table in EXPORTS.items():
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                rows = conn.execute(table).fetchall()
                times.append(time.perf_counter() - started)
            out(f"  {table + ' (the floor of ' + view + ')':<46} p50 {statistics.median(times) * 1000:8.2f} ms  "
                f"({len(rows)} rows)")
        # What the same views cost a session that leaves JIT on (the server's default), for the record.
        conn.execute("set jit = on")
        for view in ("report.success_by_carrier", "report.retries_per_success", "report.refunds",
                     "report.carrier_summary"):
            times = []
            for _ in range(3):
                started = time.perf_counter()
                conn.execute(f"select * from {view}").fetchall()
                times.append(time.perf_counter() - started)
            out(f"  {view + ' (jit on)':<46} p50 {statistics.median(times) * 1000:8.2f} ms")
    out(f"  ({_load()})")
    return results


def _summary(out, results: list[tuple[str, float, float]]) -> None:
    exports = [r for r in results if r[0] in EXPORTS]
    results = [r for r in results if r[0] not in EXPORTS]
    over = [r for r in results if r[1] >= 0.05]
    slowest = max(results, key=lambda r: r[1])
    out(f"slowest measured query: {slowest[0]} p50 {slowest[1] * 1000:.1f} ms, p95 {slowest[2] * 1000:.1f} ms")
    out(f"{len(results) - len(over)} of {len(results)} queries with p50 under 50 ms"
        + (f"; over: {', '.join(r[0] for r in over)}" if over else ""))
    for label, p50, p95 in exports:
        out(f"whole-history export, counted apart: {label} p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procedures", type=int, default=1_000_000)
    parser.add_argument("--fold-batch", type=int, default=1_000_000)
    parser.add_argument("--open-share", type=float, default=0.001,
                        help="charges still open (queued, leased, awaiting, unknown), as a share of --procedures")
    parser.add_argument("--runs", type=int, default=10, help="timed runs of each query (after one warm-up)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running; print its address, wait")
    parser.add_argument("--existing", metavar="URL",
                        help="time the queries on a database this benchmark built and kept (migrated since, "
                             "e.g. to compare a change at full size) instead of building one")
    args = parser.parse_args()
    out = print
    if args.existing:
        migrate.migrate(args.existing)
        with psycopg.connect(args.existing, autocommit=True) as conn:
            conn.execute(FOLD_EVERYTHING)
        fold_ledger(args.existing, out, args.fold_batch)
        with psycopg.connect(args.existing, autocommit=True) as conn:
            conn.execute("vacuum analyze")
        out(f"queries on the database kept by an earlier run, migrated to this code ({_load()}):")
        _summary(out, query_times(args.existing, out, args.runs))
        return
    with Server(os.environ.get("CARRIERPAY_DATABASE_URL")) as server:
        out(f"server: {server.settings()}")
        url = server.fresh_db("bench_reports")
        out(f"population: {args.procedures:,} charge procedures over {DAYS} days")
        started = time.perf_counter()
        populate(url, args.procedures, out, args.open_share)
        out(f"  populated in {time.perf_counter() - started:.0f} s")
        with psycopg.connect(url) as conn:
            sizes = conn.execute("select pg_size_pretty(pg_database_size(current_database())), "
                                 "(select count(*) from cp.procedure), (select count(*) from cp.carrier_call)"
                                 ).fetchone()
        out(f"  database {sizes[0]}: {sizes[1]:,} procedures, {sizes[2]:,} carrier calls")
        with psycopg.connect(url) as conn:
            counts = conn.execute(POPULATION_SQL).fetchone()
        out("  {:,} journals, {:,} ledger entries, {:,} subscriptions; open: {:,} calls queued, {:,} leased, "
            "{:,} awaiting a result, {:,} unknown ({:,} past their third turn)".format(*counts))
        out("folding:")
        folded, seconds = fold_all(url, out, args.fold_batch)
        out(f"  folded {folded:,} calls in {seconds:.0f} s ({folded / max(seconds, 1e-9):,.0f} calls/s)")
        with psycopg.connect(url) as conn:
            rows = conn.execute("select count(*) from cp.rollup_hour").fetchone()[0]
        out(f"  cp.rollup_hour: {rows:,} rows")
        journals, seconds = fold_ledger(url, out, args.fold_batch)
        out(f"  folded {journals:,} journals in {seconds:.0f} s ({journals / max(seconds, 1e-9):,.0f} journals/s)")
        steady_fold(url, out)
        out("queries:")
        _summary(out, query_times(url, out, args.runs))
        if args.keep:
            out(f"kept: {url} (SIGTERM or Ctrl-C stops the cluster)")
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            try:
                while True:
                    time.sleep(60)
            except KeyboardInterrupt:
                pass


if __name__ == "__main__":
    main()
