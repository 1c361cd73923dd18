"""Report and dashboard queries at scale: how long each takes with N payments in the database, and
how fast sched.fold_rollups folds them.

    PYTHONPATH=$PWD python -m carrierpay.benchmarks.reports --procedures 10000000

Builds the population set-based (generate_series; triggers and foreign-key checks off for the load
only, `session_replication_role = replica`): 4 carriers, 3 merchants with 2 products each, one
subscriber per 20 payments, N charge procedures spread over 30 days (80% succeeded, 19.7% failed,
0.3% unsettled: half unknown, half awaiting a callback) each with its carrier call, and refunds of 1% of the collected
ones. Then folds everything (`sched.fold_rollups` in batches, timed), measures one steady-state
fold of fresh calls, and times each query the reports and the dashboard run (best of 5, after one
warm-up). Runs on CARRIERPAY_DATABASE_URL (a server we may create databases on) or on a throwaway
embedded cluster. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from carrierpay import queries
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

# One charge per row of the series: carrier by subscriber, merchant and product by hash, the time
# spread over the 30 days, and the outcome from a second hash.
PROCEDURES_SQL = """
with pp as (
    select row_number() over (partition by pp.carrier_id order by pp.price_point_id) - 1 as j, pp.price_point_id,
           pp.product_id, p.merchant_id, pp.carrier_id, pp.amount_minor, pp.currency
    from cp.price_point pp join cp.product p using (product_id)
), nsub as (select count(*) as n, min(subscriber_id) as first from cp.subscriber),
g as (
    select i, (hashint8(i) & 2147483647) %% 10000 as r, (hashint8(i + 99) & 2147483647) as h,
           nsub.first + i %% nsub.n as subscriber_id
    from generate_series(%(lo)s::bigint, %(hi)s::bigint) i cross join nsub
)
insert into cp.procedure (kind, status, merchant_id, subscriber_id, carrier_id, product_id, price_point_id,
                          amount_minor, currency, collected_minor, created_at, updated_at, final_at)
select 'charge',
       (case when g.r < 8000 then 'succeeded' when g.r < 9970 then 'failed' else 'unknown' end)::cp.procedure_status,
       pp.merchant_id, s.subscriber_id, pp.carrier_id, pp.product_id, pp.price_point_id, pp.amount_minor,
       pp.currency, case when g.r < 8000 then pp.amount_minor else 0 end, t.at, t.at,
       case when g.r < 9970 then t.at + interval '2 seconds' end
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
# A fold that also re-checks every remembered straggler, whatever the cadence.
FOLD_EVERYTHING = "select sched.fold_rollups(50000, interval '0 seconds', interval '0 seconds')"
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


def populate(url: str, procedures: int, out, chunk: int = 1_000_000) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        _onboard(conn)
        conn.execute(REPLICA)
        offset = conn.execute("select cp.clock_now() - now()").fetchone()[0]
        subscribers = max(1, procedures // 20)
        _timed(out, f"{subscribers:,} subscribers", lambda: conn.execute(SETUP_SQL, {"subscribers": subscribers}))
        for lo in range(1, procedures + 1, chunk):
            hi = min(procedures, lo + chunk - 1)
            _timed(out, f"charges {lo:,}-{hi:,}", lambda lo=lo, hi=hi: conn.execute(
                PROCEDURES_SQL, {"lo": lo, "hi": hi, "now": NOW, "days": DAYS}))
        first = conn.execute("select min(procedure_id) from cp.procedure").fetchone()[0]
        for lo in range(first, first + procedures, chunk):
            _timed(out, f"calls {lo - first + 1:,}-{min(procedures, lo - first + chunk):,}",
                   lambda lo=lo: conn.execute(CALLS_SQL, {"lo": lo, "hi": lo + chunk - 1, "offset": offset}))
        _timed(out, "refunds (1% of collected)", lambda: conn.execute(REFUNDS_SQL, {"offset": offset}))
        _timed(out, "refunded charges", lambda: conn.execute(REFUNDED_SQL))
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
        return seconds


def query_times(url: str, out, runs: int = 5) -> list[tuple[str, float]]:
    week = {"from": NOW - timedelta(days=7), "to": NOW}
    day = {"from": NOW - timedelta(days=1), "to": NOW}
    month = {"from": NOW - timedelta(days=DAYS + 1), "to": NOW + timedelta(hours=1)}
    measured = [
        ("dashboard: success by hour, 24 h", queries.DASHBOARD_SUCCESS, day),
        ("dashboard: success by hour, 7 days", queries.DASHBOARD_SUCCESS, week),
        ("dashboard: success by hour, 30 days", queries.DASHBOARD_SUCCESS, month),
        ("dashboard: revenue by hour, 7 days", queries.DASHBOARD_REVENUE, week),
        ("dashboard: totals per carrier, 30 days", queries.DASHBOARD_TOTALS, month),
        ("dashboard: best hours heat map", queries.DASHBOARD_BEST_HOURS, None),
        ("dashboard: carriers (queue, latency, breaker)", queries.DASHBOARD_CARRIERS, None),
        ("dashboard: unsettled calls by age", queries.DASHBOARD_UNSETTLED, None),
        ("report revenue (rollup)", queries.report_view("revenue"), None),
        ("report hourly_calls, one day", "select * from report.hourly_calls where hour >= %(from)s "
                                         "and hour < %(to)s", day),
        ("metrics: carriers", queries.METRICS_CARRIERS, None),
        ("metrics: unsettled calls", queries.METRICS_UNSETTLED, None),
        ("report success_by_carrier", queries.report_view("success"), None),
        ("report retries_per_success", queries.report_view("retries"), None),
        ("report refunds", queries.report_view("refunds"), None),
        ("report carrier_summary", queries.report_view("carriers"), None),
        ("metrics: webhooks", queries.METRICS_WEBHOOKS, None),
        ("metrics: history lag", queries.METRICS_HISTORY, None),
        ("breakers", queries.CARRIER_BREAKERS, None),
    ]
    results = []
    with psycopg.connect(url, autocommit=True) as conn:
        for label, sql, params in measured:
            conn.execute(sql, params).fetchall()  # warm-up
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                rows = conn.execute(sql, params).fetchall()
                times.append(time.perf_counter() - started)
            best, median = min(times), statistics.median(times)
            out(f"  {label:<46} best {best * 1000:8.2f} ms  median {median * 1000:8.2f} ms  ({len(rows)} rows)")
            results.append((label, best))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procedures", type=int, default=1_000_000)
    parser.add_argument("--fold-batch", type=int, default=1_000_000)
    args = parser.parse_args()
    out = print
    with Server(os.environ.get("CARRIERPAY_DATABASE_URL")) as server:
        out(f"server: {server.settings()}")
        url = server.fresh_db("bench_reports")
        out(f"population: {args.procedures:,} charge procedures over {DAYS} days")
        started = time.perf_counter()
        populate(url, args.procedures, out)
        out(f"  populated in {time.perf_counter() - started:.0f} s")
        with psycopg.connect(url) as conn:
            sizes = conn.execute("select pg_size_pretty(pg_database_size(current_database())), "
                                 "(select count(*) from cp.procedure), (select count(*) from cp.carrier_call)"
                                 ).fetchone()
        out(f"  database {sizes[0]}: {sizes[1]:,} procedures, {sizes[2]:,} carrier calls")
        out("folding:")
        folded, seconds = fold_all(url, out, args.fold_batch)
        out(f"  folded {folded:,} calls in {seconds:.0f} s ({folded / max(seconds, 1e-9):,.0f} calls/s)")
        with psycopg.connect(url) as conn:
            rows = conn.execute("select count(*) from cp.rollup_hour").fetchone()[0]
        out(f"  cp.rollup_hour: {rows:,} rows")
        steady_fold(url, out)
        out("queries:")
        results = query_times(url, out)
        slowest = max(results, key=lambda r: r[1])
        out(f"slowest measured query: {slowest[0]} {slowest[1] * 1000:.1f} ms "
            f"({'under' if slowest[1] < 0.05 else 'over'} 50 ms)")


if __name__ == "__main__":
    main()
