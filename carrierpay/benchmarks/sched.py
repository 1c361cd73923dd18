"""Scheduling engine benchmark: fixed retry hours, the carrier's best hours and each subscriber's own
best hours, side by side on one simulated prepaid population, and how fast sched.run_due turns a
large backlog of due subscriptions into queued charges.

    PYTHONPATH=$PWD python -m carrierpay.benchmarks.sched     # both parts at the default (reduced) size
    PYTHONPATH=$PWD python -m carrierpay.benchmarks.sched --subscriptions 100000 --days 30 \
        --due 1000000 --due-seconds 600

The defaults (2,000 subscriptions x 7 days; 100,000 due) take a few minutes on 2 cores. Part (a) at
the full size (100,000 x 30 days, --parallel --serve-workers 2) took 95 minutes (benchmarks/RESULTS.md, a12).

Runs on CARRIERPAY_DATABASE_URL (a server we may create databases on) or on a throwaway embedded
cluster. Prints figures; asserts nothing.

A run longer than the time at hand stops at the end of a simulated hour and goes on later, on a
server that outlives it (the embedded one of `carrierpay db up` will do):

    export CARRIERPAY_DATABASE_URL=$(carrierpay db url)
    PYTHONPATH=$PWD python -m carrierpay.benchmarks.sched --subscriptions 100000 --days 30 \
        --timings fixed,subscriber --parallel --skip-due --stop-by 15:00
    PYTHONPATH=$PWD python -m carrierpay.benchmarks.sched --subscriptions 100000 --days 30 \
        --timings fixed,subscriber --parallel --skip-due --resume     # the same options, plus --resume

Fixed hours draw no random numbers, so a stopped and resumed run ends with the figures of one run.

(a) The simulated carrier lives in SQL (schema bench): each subscriber has a prepaid balance, a
habitual local top-up hour, a top-up amount and a top-up rhythm (every 1-7 days); the balance is
spent down between top-ups (exponential decay per hour, applied lazily) and by each successful charge.
A charge succeeds when the balance at the attempt's moment covers it. The clock moves hour by hour
(admin.set_clock); each hour runs the top-ups, sched.run_due, then adapter.claim_calls and
adapter.complete_calls in batches, then sched.fold_hour_stats, as the daemons would.
(b) Bulk-inserts N subscriptions due at once and times sched.run_due batches.

`--timings fixed,oracle` adds a reference that is not a product timing: the oracle reads the simulated
balances and charges exactly when a charge would succeed (bench.oracle_place). Each timing's summary
says where renewals were lost (periods owed or written off, failed calls by price, days whose whole
attempt allowance failed) and where the wall time went, phase by phase.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from carrierpay import migrate, queries
from carrierpay.embedded import EmbeddedCluster, create_available_extensions

START = datetime(2030, 3, 4, tzinfo=UTC)
# code, country, currency, timezone (no DST, whole-hour offsets), full and stepped-down price
CARRIERS = [
    ("sim_ng", "NG", "NGN", "Africa/Lagos", 10000, 5000),
    ("sim_pk", "PK", "PKR", "Asia/Karachi", 2000, 1000),
    ("sim_ke", "KE", "KES", "Africa/Nairobi", 1000, 500),
    ("sim_za", "ZA", "ZAR", "Africa/Johannesburg", 500, 300),
]

SIM_SQL = """
create schema bench;

-- How far a simulation has come, for a run that stops at an hour's end and is resumed (--resume):
-- simulated hours done, wall seconds and seconds by phase so far.
create table bench.progress (
    hours_done integer not null,
    seconds    float8 not null,
    phases     jsonb not null
);
-- One simulated prepaid account per subscriber.
create table bench.sim (
    subscriber_id bigint primary key,
    msisdn        text not null unique,
    carrier_id    integer not null,
    topup_hour    smallint not null,   -- habitual local hour of the top-up
    topup_every   smallint not null,   -- days between top-ups
    topup_phase   smallint not null,
    topup_amount  bigint not null,     -- minor units
    balance       float8 not null,     -- minor units, as of balance_at
    balance_at    timestamptz not null
);
create index on bench.sim (carrier_id, topup_hour);

-- Top up every account of a carrier whose habit is this local hour (and day of its rhythm). The control
-- populations keep how often an account tops up but not when: p_habits 'day' keeps the days of the
-- rhythm and draws the hour afresh each time; 'none' gives each hour a chance of one in 24 x the rhythm,
-- so neither the hour nor the day can be learned.
create function bench.top_up(p_carrier_id integer, p_local_hour integer, p_day integer, p_decay float8,
                             p_habits text default 'hour-and-day', p_seed integer default 0)
returns integer language sql as $$
    with t as (
        update bench.sim
        set balance = balance * power(p_decay, extract(epoch from cp.clock_now() - balance_at) / 3600) + topup_amount,
            balance_at = cp.clock_now()
        where carrier_id = p_carrier_id
          and case p_habits
                  when 'hour-and-day' then topup_hour = p_local_hour and (p_day + topup_phase) % topup_every = 0
                  when 'day' then (p_day + topup_phase) % topup_every = 0
                       and (hashint8(subscriber_id * 1000003 + p_day + p_seed * 7919) & 2147483647) % 24 = p_local_hour
                  else (hashint8(subscriber_id * 1000003 + p_day * 24 + p_local_hour + p_seed * 7919)
                        & 2147483647) % (24 * topup_every) = 0 end
        returning 1
    ) select count(*)::int from t
$$;

-- The simulated carrier: claim a batch of calls, decide each charge from the balance at this moment,
-- and complete the batch. Returns how many calls were handled.
create function bench.serve(p_carrier text, p_limit integer, p_decay float8) returns integer
language plpgsql as $$
declare
    v_docs jsonb;
    v_results jsonb;
begin
    select coalesce(jsonb_agg(d), '[]') into v_docs
    from adapter.claim_calls(p_carrier, p_limit, interval '1 hour', 'bench') d;
    if jsonb_array_length(v_docs) = 0 then
        return 0;
    end if;
    with calls as (
        select (d->>'call_id')::bigint as call_id, d->>'operation' as op, d->>'msisdn' as msisdn,
               (d->>'amount_minor')::bigint as amount
        from jsonb_array_elements(v_docs) d
    ), cur as (
        select c.*, s.subscriber_id,
               s.balance * power(p_decay, extract(epoch from cp.clock_now() - s.balance_at) / 3600) as bal
        from calls c left join bench.sim s on s.msisdn = c.msisdn
    ), spent as (
        update bench.sim s
        set balance = case when cur.bal >= cur.amount then cur.bal - cur.amount else cur.bal end,
            balance_at = cp.clock_now()
        from cur where s.subscriber_id = cur.subscriber_id and cur.op = 'charge'
        returning 1
    )
    select jsonb_agg(jsonb_build_object(
               'call_id', call_id,
               'outcome', case when op <> 'charge' or bal >= amount then 'succeeded' else 'failed' end,
               'reason', case when op = 'charge' and bal < amount then 'insufficient_funds' end,
               'carrier_code', case when op = 'charge' and bal < amount then 'POL1000' end,
               'latency_ms', 200)
           || case when op = 'balance' then jsonb_build_object('balance_minor', floor(bal)::bigint) else '{}' end)
    into v_results from cur;
    perform adapter.complete_calls(v_results);
    return jsonb_array_length(v_docs);
end
$$;

-- Each carrier's charging window and daily attempt allowance, as the product's regulation rules say:
-- the benchmark's own timings keep to them.
create view bench.carrier_rules as
    select c.carrier_id, c.timezone, r.rules->>'charging_hours' as hours,
           (r.rules->>'max_attempts_per_day')::int as max_attempts
    from cp.carrier c cross join lateral (select cp.effective_rules(c.carrier_id) as rules) r;

-- The oracle timing (benchmark only, never in the product): it reads each subscriber's simulated
-- balance and, each hour before sched.run_due, makes due exactly the subscriptions whose charge would
-- succeed now, inside the charging window and the day's attempt allowance. A subscription at full price
-- whose balance covers only the stepped-down price (and will still cover it an hour later) is let fail
-- once at full price, which is how the product steps down; every other subscription is held.
-- Only periods already begun are charged (paid_through <= now), as the product would. Returns how many
-- subscriptions were made due.
create function bench.oracle_place(p_decay float8) returns integer
language sql as $$
    with rules as materialized (
        select * from bench.carrier_rules
    ), prices as materialized (
        select carrier_id, max(amount_minor) filter (where variant = 'full') as full_price,
               max(amount_minor) filter (where variant = 'half') as half_price
        from cp.price_point group by carrier_id
    ), cand as (
        select s.subscription_id, s.retry_level, p.full_price, p.half_price,
               b.balance * power(p_decay, extract(epoch from cp.clock_now() - b.balance_at) / 3600) as bal,
               cp.in_window((cp.clock_now() at time zone r.timezone)::time, r.hours) as in_window,
               r.max_attempts - case when s.attempts_day = (cp.clock_now() at time zone r.timezone)::date
                                     then s.attempts_today else 0 end as attempts_left
        from cp.subscription s
        join bench.sim b using (subscriber_id)
        join rules r on r.carrier_id = b.carrier_id
        join prices p on p.carrier_id = b.carrier_id
        where s.next_charge_at is not null and s.paid_through <= cp.clock_now()
          and s.status in ('active', 'retrying', 'grace', 'suspended')
    ), go as (
        select subscription_id,
               in_window and (
                   (attempts_left >= 1 and bal >= case when retry_level = 0 then full_price else half_price end)
                   or (attempts_left >= 2 and retry_level = 0 and bal < full_price and bal * p_decay >= half_price)
               ) as go
        from cand
    ), placed as (
        -- a held row is put a day ahead, so it is rewritten only when it may go (each hour decides anew)
        update cp.subscription s
        set next_charge_at = case when g.go then cp.clock_now() else cp.clock_now() + interval '1 day' end
        from go g
        where s.subscription_id = g.subscription_id
          and (g.go or s.next_charge_at <= cp.clock_now() + interval '1 hour')
        returning g.go
    ) select (count(*) filter (where go))::int from placed
$$;

-- What a balance query before each charge at full price would do (benchmark only: the product has no
-- balance query yet), on top of fixed hours or the subscriber timing: each hour, before sched.run_due,
-- every renewal due now at full price, inside the window and with an attempt left today, is preceded
-- by one query (counted in bench.balance_queries, a carrier call) when the subscriber's score at this
-- hour (cp.timing_score) is below p_below (1: always). Covered, or covering only the
-- stepped-down price: charged as the timing would (the second fails and steps down, as the product
-- does). Not even that: no charge; the renewal moves to its next retry time (fixed or learned) as after
-- a failure, without stepping down or ageing the subscription; with p_hold_a_day (subscriber timing),
-- to its best hour of the coming day instead (an empty balance stays empty until the next top-up, and
-- the best hour is the one just after the usual top-up). Returns how many were held back.
create table bench.balance_queries (hour timestamptz primary key, queries integer not null);
create function bench.balance_check(p_decay float8, p_below float8, p_hold_a_day boolean) returns integer
language sql as $$
    with rules as materialized (
        select * from bench.carrier_rules
    ), prices as materialized (
        select carrier_id, max(amount_minor) filter (where variant = 'half') as half_price
        from cp.price_point group by carrier_id
    ), asked as materialized (
        select s.subscription_id,
               b.balance * power(p_decay, extract(epoch from cp.clock_now() - b.balance_at) / 3600) < p.half_price
                   as hold
        from cp.subscription s
        join bench.sim b using (subscriber_id)
        join rules r on r.carrier_id = b.carrier_id
        join prices p on p.carrier_id = b.carrier_id
        left join cp.subscriber_timing t on t.subscriber_id = s.subscriber_id
        left join cp.hour_stats hs
               on hs.carrier_id = b.carrier_id
              and hs.local_hour = extract(hour from cp.clock_now() at time zone r.timezone)
        where s.next_charge_at <= cp.clock_now() and s.retry_level = 0
          and s.status in ('active', 'retrying', 'grace', 'suspended')
          -- only where the subscriber's history at this hour says the charge will likely fail
          and cp.timing_score(t.hours, extract(hour from cp.clock_now() at time zone r.timezone)::int,
                              hs.attempts, hs.successes) < p_below
          and cp.in_window((cp.clock_now() at time zone r.timezone)::time, r.hours)
          and (s.attempts_day is distinct from (cp.clock_now() at time zone r.timezone)::date
               or s.attempts_today < r.max_attempts)
    ), counted as (
        insert into bench.balance_queries select cp.clock_now(), count(*) from asked
    ), held as (
        update cp.subscription s
        set next_charge_at = case when p_hold_a_day then cp.first_attempt_time(n.subscription_id,
                                                                             cp.clock_now() + interval '1 hour')
                                  else n.retry_at end
        from cp.next_retry_times(array(select subscription_id from asked where hold)) n
        where s.subscription_id = n.subscription_id
        returning 1
    ) select count(*)::int from held
$$;
"""


@dataclass
class SimResult:
    timing: str
    seconds: float
    calls: int
    renewals: int
    full_price_renewals: int
    revenue: dict[str, int]
    revenue_units: float
    statuses: dict[str, int]
    best_hours: dict[str, list[int]]
    timing_state: dict  # report.subscriber_timing(), .subscriber_rhythm() and .timing_habits() (under "habits")
    causes: dict  # where renewals were lost (CAUSES_SQL)
    phases: dict  # wall seconds per phase of the simulated hours


class Server:
    """Where the benchmark's databases live: a given server, or an embedded cluster of our own."""

    def __init__(self, url: str | None, keep: bool = False):
        self.base_url = url
        self.keep = keep  # leave the simulations' databases on the given server for inspection
        self.cluster: EmbeddedCluster | None = None
        self.home: Path | None = None

    def __enter__(self) -> Server:
        if not self.base_url:
            self.home = Path(tempfile.mkdtemp(prefix="carrierpay-bench-", dir=os.environ.get("TMPDIR", "/tmp")))
            os.chmod(self.home, 0o755)
            self.cluster = EmbeddedCluster(self.home, fast=True)
            self.cluster.init()
            self.cluster.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cluster:
            self.cluster.stop()
            shutil.rmtree(self.home, ignore_errors=True)

    def url(self, dbname: str) -> str:
        if self.cluster:
            return self.cluster.url(dbname)
        # a URL, not key=value words: the migrations (SQLAlchemy) read it too
        return make_url(self.base_url).set(database=dbname).render_as_string(hide_password=False)

    def fresh_db(self, name: str) -> str:
        admin = self.url("postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')
            conn.execute(f'create database "{name}" template template0 encoding utf8')
        url = self.url(name)
        create_available_extensions(url, ("pgcrypto",))
        migrate.migrate(url)
        return url

    def drop_db(self, name: str) -> None:
        if self.keep:
            return
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')

    def settings(self) -> dict[str, str]:
        with psycopg.connect(self.url("postgres")) as conn:
            names = ("server_version", "shared_buffers", "work_mem", "fsync", "synchronous_commit",
                     "full_page_writes", "max_wal_size", "jit")
            return {n: conn.execute(f"show {n}").fetchone()[0] for n in names}


# admin.add_merchant creates the merchant's login role, and roles belong to the whole server: two
# timings onboarding side by side (--parallel) would both create it and one would fail.
_ONBOARD_LOCK = threading.Lock()


def onboard(conn: psycopg.Connection, carriers: list[tuple], timing: str, tps: int,
            call_costs: dict | None = None) -> None:
    with _ONBOARD_LOCK:
        _onboard(conn, carriers, timing, tps, call_costs)


def _onboard(conn: psycopg.Connection, carriers: list[tuple], timing: str, tps: int,
             call_costs: dict | None) -> None:
    conn.execute("select admin.set_clock(%s)", [START])
    for i, (code, country, currency, tz, _full, _half) in enumerate(carriers):
        spec = {"code": code, "name": code, "country": country, "mcc": "999", "mnc": f"{i:02d}",
                "currency": currency, "timezone": tz, "number_ranges": [f"+99{i}"], "throughput": {"tps": tps},
                "regulation": "DEFAULT",
                "operations": {"charge": {"pattern": "sync"}, "send_sms": {"pattern": "sync"}}}
        if call_costs:
            # the product's balance query before a likely failure (docs/scheduling.md)
            spec["operations"]["balance"] = {"pattern": "sync"}
            spec["terms"] = {"carrier_share_bp": 0, "call_costs": call_costs}
        conn.execute("select admin.onboard_carrier(%s)", [psycopg.types.json.Jsonb(spec)])
    conn.execute("select admin.add_merchant('bench', 'Bench Games')")
    conn.execute("select admin.add_product('bench', 'daily', 'Daily club', 'step_down', %s)", [timing])
    for code, _, currency, _, full, half in carriers:
        for amount, variant in ((full, "full"), (half, "half")):
            conn.execute("select admin.add_price_point('bench', 'daily', 'daily', %s, %s, %s, p_carrier => %s)",
                         [amount, currency, variant, code])


POPULATION_SQL = """
-- Subscribers spread over the carriers; each has a habit drawn from a seeded generator: most top up
-- in the morning (07-09), at lunch (12-13) or in the evening (18-20); a few at any hour.
with g as (
    select i, mod(i, %(ncarriers)s) + 1 as k, (hashint8(i + %(offset)s) & 2147483647)::float8 / 2147483647 as r1,
           (hashint8(i + 7777777 + %(offset)s) & 2147483647)::float8 / 2147483647 as r2,
           (hashint8(i + 15555555 + %(offset)s) & 2147483647)::float8 / 2147483647 as r3
    from generate_series(1, %(n)s) i
), c as (
    select row_number() over (order by carrier_id) as k, carrier_id, timezone from cp.carrier
), s as (
    insert into cp.subscriber (msisdn, carrier_id)
    select '+99' || (g.k - 1) || lpad(g.i::text, 9, '0'), c.carrier_id from g join c using (k)
    returning subscriber_id, msisdn, carrier_id
)
insert into bench.sim (subscriber_id, msisdn, carrier_id, topup_hour, topup_every, topup_phase, topup_amount,
                       balance, balance_at)
select s.subscriber_id, s.msisdn, s.carrier_id,
       case when g.r1 < 0.35 then 7 + floor(g.r2 * 3)
            when g.r1 < 0.55 then 12 + floor(g.r2 * 2)
            when g.r1 < 0.90 then 18 + floor(g.r2 * 3)
            else floor(g.r2 * 24) end,
       1 + floor(g.r3 * 4)::int,                  -- every 1-4 days
       floor(g.r2 * 7)::int,
       (pp.amount_minor * (0.8 + 2.5 * g.r3 * g.r1))::bigint,
       pp.amount_minor * 2 * g.r2, cp.clock_now()
from s join g on s.msisdn = '+99' || (g.k - 1) || lpad(g.i::text, 9, '0')
join cp.price_point pp on pp.carrier_id = s.carrier_id and pp.variant = 'full';
--
-- Their subscriptions, each anchored at a local time of day between 06:00 and 23:00,
-- with the first renewal due during the first simulated day.
insert into cp.subscription (merchant_id, subscriber_id, carrier_id, product_id, plan, status, price_point_id,
                             anchor_local, period_index, next_charge_at, paid_through, status_since)
select p.merchant_id, b.subscriber_id, b.carrier_id, p.product_id, 'daily', 'active', pp.price_point_id,
       a.anchor, 1, cp.period_start(a.anchor, 'daily', 1, c.timezone),
       cp.period_start(a.anchor, 'daily', 1, c.timezone), cp.clock_now()
from bench.sim b
join cp.carrier c using (carrier_id)
join cp.product p on p.code = 'daily'
join cp.price_point pp on pp.product_id = p.product_id and pp.carrier_id = b.carrier_id and pp.variant = 'full'
cross join lateral (
    select (%(start)s::timestamptz at time zone c.timezone)::date - 1
           + make_interval(mins => (360 + (hashint8(b.subscriber_id + 99) & 1023) * 1020 / 1024)::int) as anchor
) a
"""


def queue_due(conn: psycopg.Connection, batch: int) -> None:
    """Queue every renewal due now, as the scheduler's tick does (carrierpay.scheduler.queue_due, on
    an async connection; this is its loop on the benchmark's connection, with the benchmark's 600 s
    lookahead): batch by batch until sched.due_left says nothing is due, or a batch changed nothing."""
    left = None
    while True:
        if conn.execute("select sched.run_due(%s, 600)", [batch]).fetchone()[0] >= batch:
            continue
        now_left = conn.execute(queries.DUE_LEFT).fetchone()[0]
        if now_left == 0 or now_left == left:
            return
        left = now_left


def wall_time_today(hh_mm: str) -> datetime:
    """HH:MM (UTC) as the next such moment: today's, or tomorrow's once today's has passed."""
    hour, minute = (int(x) for x in hh_mm.split(":"))
    now = datetime.now(UTC)
    at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return at if at > now else at + timedelta(days=1)


def sim_db_name(timing: str, habits: str, seed: int) -> str:
    """A simulation's database: named by its population too, so runs of other populations against one
    server (CARRIERPAY_DATABASE_URL) leave each other's databases alone."""
    return f"bench_sim_{timing}_{habits.replace('-', '_')}_{seed}"


def set_up(conn: psycopg.Connection, carriers: list[tuple], product_timing: str, subscriptions: int,
           ncarriers: int, seed: int, call_costs: dict | None = None) -> None:
    """A simulation's world: the carriers and product, the simulated accounts and the subscriptions."""
    onboard(conn, carriers, product_timing, tps=100_000, call_costs=call_costs)
    conn.execute(SIM_SQL)
    # Seed 0 is the population every recorded run used; another seed draws other habits and numbers.
    conn.execute("select setseed(%s)", [0.42 if seed == 0 else (0.42 + seed * 0.137) % 1])
    subscribers, subs = POPULATION_SQL.split("\n--\n")
    conn.execute(subscribers, {"n": subscriptions, "ncarriers": ncarriers, "offset": seed * 100_000_007})
    conn.execute(subs, {"start": START})
    # each subscription's first due moment, to count the periods it could have paid by the end
    conn.execute("create table bench.first_due as select subscription_id, next_charge_at from cp.subscription")
    conn.execute("analyze")
    conn.execute("insert into bench.progress values (0, 0, %s)",
                 [psycopg.types.json.Jsonb(dict.fromkeys(PHASES, 0.0))])


@dataclass
class StopAt:
    """Where a long run stops, at the end of a simulated hour: after so many simulated hours of this
    run, or once the wall clock has passed a moment (a session's end); its databases are kept."""
    hours: int | None = None
    wall: datetime | None = None

    def reached(self, hours_this_run: int) -> bool:
        return ((self.hours is not None and hours_this_run >= self.hours)
                or (self.wall is not None and datetime.now(UTC) >= self.wall))


PHASES = ("top_up", "oracle", "balance_check", "run_due", "serve", "fold", "housekeeping")


def simulate(server: Server, timing: str, subscriptions: int, days: int, ncarriers: int, batch: int,
             decay: float, url: str | None = None, check_below: float = 1.0, hold_a_day: bool = False,
             seed: int = 0, habits: str = "hour-and-day", serve_workers: int = 1, resume: bool = False,
             stop: StopAt | None = None) -> SimResult | None:
    """One timing's simulation; None when it stopped at an hour's end before the last (`stop`), its
    database kept to be resumed (`resume`: go on from the hour it stopped at, setting nothing up)."""
    name = sim_db_name(timing, habits, seed)
    url = url or (server.url(name) if resume else server.fresh_db(name))
    carriers = CARRIERS[:ncarriers]
    # The oracle is the benchmark's, not a product timing: its product keeps fixed hours, which the
    # oracle overrides each hour (bench.oracle_place).
    oracle = timing == "oracle"
    # The benchmark's too: fixed hours (balance_check) or the subscriber timing (subscriber_check), with
    # a balance query before each charge at full price.
    balance_check = timing in ("balance_check", "subscriber_check")
    product_timing = {"oracle": "fixed", "balance_check": "fixed", "subscriber_check": "subscriber",
                      "subscriber_query": "subscriber"}.get(timing, timing)
    # The product's own query before a likely failure: carriers whose terms make a failed charge cost
    # more than a balance query (four times, as a throughput budget split 25 : 10 between them might).
    call_costs = {"charge_failed": 4, "balance": 1} if timing == "subscriber_query" else None
    with psycopg.connect(url, autocommit=True) as conn:
        if not resume:
            set_up(conn, carriers, product_timing, subscriptions, ncarriers, seed, call_costs)
        ids = conn.execute("select carrier_id, code, timezone from cp.carrier order by carrier_id").fetchall()
        # where a simulated hour goes: wall seconds per phase, summed over the run (and its earlier parts)
        hours_done, seconds_before, phases = conn.execute(
            "select hours_done, seconds, phases from bench.progress").fetchone()
        t0 = time.monotonic() - seconds_before
        mark = time.monotonic()

        def lap(phase: str) -> None:
            nonlocal mark
            now_s = time.monotonic()
            phases[phase] += now_s - mark
            mark = now_s

        # The simulated carriers answer their calls on serve_workers connections: a batch at a time, each
        # carrier queued once per connection (fixed hours are local hours, so an hour often has one busy
        # carrier: its batches are claimed side by side, as adapters do), a carrier with a full batch
        # served back in the queue. A subscriber has at most one charge in flight and the clock stands
        # still within the hour, so the order batches are served in changes no outcome.
        workers = [conn] + [psycopg.connect(url, autocommit=True) for _ in range(serve_workers - 1)]
        pool = ThreadPoolExecutor(max_workers=len(workers))

        def serve_all(codes: list[str]) -> None:
            pending = queue.SimpleQueue()
            for code in codes:
                for _ in workers:
                    pending.put(code)

            def work(worker: psycopg.Connection) -> None:
                while True:
                    try:
                        code = pending.get_nowait()
                    except queue.Empty:
                        return
                    if worker.execute("select bench.serve(%s, %s, %s)", [code, batch, decay]).fetchone()[0] >= batch:
                        pending.put(code)

            list(pool.map(work, workers))

        # The clock stands still within a simulated hour: what happens in it happens at the hour, however
        # long the database takes (a running clock let a balance within seconds of decay of the price
        # fall either way, so figures varied by a unit with the machine's speed).
        conn.execute("select admin.hold_clock()")
        for hour in range(hours_done, days * 24):
            if stop and stop.reached(hour - hours_done):
                conn.execute("update bench.progress set hours_done = %s, seconds = %s, phases = %s",
                             [hour, time.monotonic() - t0, psycopg.types.json.Jsonb(phases)])
                print(f"  [{timing}] stopped after {hour} of {days * 24} simulated hours (day {hour // 24 + 1}, "
                      f"{time.monotonic() - t0:.0f} s); its database {name} is kept: go on with --resume",
                      flush=True)
                return None
            now = START + timedelta(hours=hour)
            conn.execute("select admin.set_clock(%s)", [now])
            for carrier_id, _, tz in ids:
                local = conn.execute("select (%s::timestamptz at time zone %s)", [now, tz]).fetchone()[0]
                conn.execute("select bench.top_up(%s, %s, %s, %s, %s, %s)",
                             [carrier_id, local.hour, (local.date() - START.date()).days, decay, habits, seed])
            lap("top_up")
            if oracle:
                conn.execute("select bench.oracle_place(%s)", [decay])
                lap("oracle")
            if balance_check:
                conn.execute("select bench.balance_check(%s, %s, %s)", [decay, check_below, hold_a_day])
                lap("balance_check")
            queue_due(conn, batch)
            lap("run_due")
            serve_all([code for _, code, _ in ids])
            lap("serve")
            conn.execute("select sched.fold_hour_stats()")
            lap("fold")
            if hour in (0, 11) or (hour + 1) % 24 == 0:
                # What a running system does on its own: the history shipper moves the outboxes to the
                # history store (without it the events alone would fill tens of GB at full size), and
                # autovacuum keeps the planner's statistics current (the tables start empty). Hour 11
                # too: the first renewals are at 06:00 local, and a table analyzed while empty (at hour
                # 0) is planned as one row until the next analyze, which autovacuum, a minute away,
                # may or may not make within the simulated day (the fold then scans the subscriber
                # timing table once per subscriber it folds).
                conn.execute("delete from cp.event")
                conn.execute("delete from cp.carrier_log")
                conn.execute("analyze")
            if (hour + 1) % 24 == 0:
                day = (hour + 1) // 24
                calls, ok = conn.execute("select count(*), count(*) filter (where status = 'done') "
                                         "from cp.carrier_call where operation = 'charge'").fetchone()
                print(f"  [{timing}] day {day:2d}/{days}: {calls} charge calls, {ok} collected, "
                      f"{time.monotonic() - t0:.0f} s", flush=True)
            lap("housekeeping")
        seconds = time.monotonic() - t0
        pool.shutdown()
        for worker in workers[1:]:
            worker.close()
        calls = conn.execute("select count(*) from cp.carrier_call where operation = 'charge'").fetchone()[0]
        renewals, full_price = conn.execute(
            "select count(*), count(*) filter (where p.amount_minor = pp.amount_minor) from cp.procedure p "
            "join cp.price_point pp on pp.carrier_id = p.carrier_id and pp.variant = 'full' "
            "where p.kind = 'charge' and p.status = 'succeeded'").fetchone()
        revenue = dict(conn.execute("select currency, sum(collected_minor)::bigint from cp.procedure "
                                    "where kind = 'charge' and status = 'succeeded' group by 1 order by 1").fetchall())
        units = conn.execute(
            "select coalesce(sum(p.collected_minor::float8 / pp.amount_minor), 0) from cp.procedure p "
            "join cp.price_point pp on pp.carrier_id = p.carrier_id and pp.variant = 'full' "
            "where p.kind = 'charge' and p.status = 'succeeded'").fetchone()[0]
        statuses = dict(conn.execute("select status::text, count(*) from cp.subscription group by 1 order by 1"))
        best = {}
        for carrier_id, code, _ in ids:
            best[code] = [r[0] for r in conn.execute(
                "select local_hour from cp.hour_stats where carrier_id = %s and attempts >= 50 "
                "order by successes::float8 / attempts desc limit 3", [carrier_id])]
        with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            state = cur.execute("select * from report.subscriber_timing()").fetchone()
            state.update(cur.execute("select * from report.subscriber_rhythm()").fetchone())
            state["habits"] = cur.execute("select * from report.timing_habits()").fetchall()
            causes = cur.execute(CAUSES_SQL, {"end": START + timedelta(days=days)}).fetchone()
    server.drop_db(name)
    return SimResult(timing, seconds, calls, renewals, full_price, revenue, units, statuses, best, state, causes,
                     phases)


# Where a timing loses renewals, in periods (one a day a subscription): the periods that began before
# the end, those collected (at full price or stepped down), those still owed at the end, and those
# written off (skipped when a suspended subscription restarts, or cancelled); the failed charge calls
# by price; and the subscription-days whose whole attempt allowance failed (a success that day was
# then impossible, whatever the balance did later).
CAUSES_SQL = """
with per_sub as (
    select s.subscription_id, s.status,
           floor(extract(epoch from %(end)s::timestamptz - f.next_charge_at) / 86400)::int + 1 as periods_begun,
           case when s.status = 'cancelled' or s.paid_through > %(end)s::timestamptz then 0
                else floor(extract(epoch from %(end)s::timestamptz - s.paid_through) / 86400)::int + 1 end as owed
    from cp.subscription s join bench.first_due f using (subscription_id)
), attempts as (
    select p.subscription_id, (p.created_at at time zone c.timezone)::date as local_day, p.status,
           p.amount_minor = pp.amount_minor as full_price
    from cp.procedure p
    join cp.carrier c on c.carrier_id = p.carrier_id
    join cp.price_point pp on pp.carrier_id = p.carrier_id and pp.variant = 'full'
    where p.kind = 'charge'
), days as (
    select subscription_id, local_day, count(*) as tries, count(*) filter (where status = 'succeeded') as ok
    from attempts group by 1, 2
)
select (select sum(periods_begun) from per_sub) as periods_begun,
       (select count(*) filter (where status = 'succeeded' and full_price) from attempts) as collected_full,
       (select count(*) filter (where status = 'succeeded' and not full_price) from attempts) as collected_stepped,
       (select sum(owed) from per_sub) as owed_at_end,
       (select count(*) filter (where status = 'failed' and full_price) from attempts) as failed_full,
       (select count(*) filter (where status = 'failed' and not full_price) from attempts) as failed_stepped,
       (select count(*) filter (where tries >= 3 and ok = 0) from days) as days_allowance_spent,
       (select coalesce(sum(queries), 0) from bench.balance_queries)
       + (select count(*) from cp.carrier_call where operation = 'balance') as balance_queries
"""


DUE_SQL = """
with s as (
    insert into cp.subscriber (msisdn, carrier_id)
    select '+990' || lpad(g::text, 10, '0'), c.carrier_id from generate_series(1, %(n)s) g, cp.carrier c
    returning subscriber_id, carrier_id
)
insert into cp.subscription (merchant_id, subscriber_id, carrier_id, product_id, plan, status, price_point_id,
                             anchor_local, period_index, next_charge_at, paid_through, status_since)
select p.merchant_id, s.subscriber_id, s.carrier_id, p.product_id, 'daily', 'active', pp.price_point_id,
       (cp.clock_now() at time zone 'Africa/Lagos') - interval '1 day 1 hour', 1,
       cp.clock_now() - interval '1 hour' + mod(s.subscriber_id, 3600) * interval '1 second',
       cp.clock_now() - interval '1 hour', cp.clock_now()
from s join cp.product p on p.code = 'daily'
join cp.price_point pp on pp.product_id = p.product_id and pp.carrier_id = s.carrier_id and pp.variant = 'full'
"""


def due_rate(server: Server, due: int, batch: int, seconds: float) -> dict:
    name = "bench_due"
    url = server.fresh_db(name)
    with psycopg.connect(url, autocommit=True) as conn:
        # One carrier with a budget far above the backlog: we measure run_due, not the budget.
        onboard(conn, CARRIERS[:1], "fixed", tps=100_000)
        t0 = time.monotonic()
        conn.execute(DUE_SQL, {"n": due})
        conn.execute("analyze")
        insert_s = time.monotonic() - t0
        queued, calls, t0 = 0, 0, time.monotonic()
        batch_times = []
        while time.monotonic() - t0 < seconds:
            b0 = time.monotonic()
            n = conn.execute("select sched.run_due(%s, 60)", [batch]).fetchone()[0]
            batch_times.append(time.monotonic() - b0)
            queued += n
            calls += 1
            if n < batch:
                break
        elapsed = time.monotonic() - t0
    server.drop_db(name)
    batch_times.sort()
    return {"due": due, "insert_s": insert_s, "queued": queued, "elapsed_s": elapsed, "rate": queued / elapsed,
            "batches": calls, "batch_p50_s": batch_times[len(batch_times) // 2],
            "batch_max_s": batch_times[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscriptions", type=int, default=2_000, help="simulated population (part a)")
    parser.add_argument("--days", type=int, default=7, help="simulated days (part a)")
    parser.add_argument("--carriers", type=int, default=3, choices=(2, 3, 4))
    parser.add_argument("--decay", type=float, default=0.96, help="share of the balance left after each hour")
    parser.add_argument("--batch", type=int, default=5000, help="run_due / claim batch size")
    parser.add_argument("--due", type=int, default=100_000, help="due subscriptions for part b")
    parser.add_argument("--due-seconds", type=float, default=30, help="time spent running run_due in part b")
    parser.add_argument("--parallel", action="store_true",
                        help="run the timings' simulations side by side (two at a time, one core each)")
    parser.add_argument("--timings", default="fixed,best_hour,subscriber",
                        help="comma-separated timings to simulate, compared with the first (default: all three; "
                             "also oracle: the benchmark's balance-reading reference, and balance_check: fixed "
                             "hours with a balance query before each charge at full price, subscriber_check: the "
                             "same over the subscriber timing; none is a product timing; subscriber_query: the "
                             "product's subscriber timing on carriers whose terms make a failed charge cost more "
                             "than a balance query, so it queries before a likely failure)")
    parser.add_argument("--check-below", type=float, default=1.0,
                        help="balance_check / subscriber_check: query the balance only where the subscriber's "
                             "score at the hour is below this (default 1: before every charge at full price)")
    parser.add_argument("--hold-a-day", action="store_true",
                        help="subscriber_check: a renewal whose balance query found too little waits for the "
                             "subscriber's best hour of the coming day, not the next retry slot")
    parser.add_argument("--seed", type=int, default=0,
                        help="another population of the same model (default 0: the one every recorded run used)")
    parser.add_argument("--habits", choices=("hour-and-day", "day", "none"), default="hour-and-day",
                        help="what a subscriber's top-ups keep to: the model's habitual hour and day rhythm "
                             "(default), the days only (control: the hour drawn afresh each time), or neither "
                             "(control: each hour a chance, as often on average)")
    parser.add_argument("--serve-workers", type=int, default=1,
                        help="connections the simulated carriers answer on, a carrier's batch at a time "
                             "(2 uses both cores for one timing; the outcomes are the same)")
    parser.add_argument("--keep", action="store_true",
                        help="leave each simulation's database (bench_sim_<timing>_<habits>_<seed>) on the "
                             "server of CARRIERPAY_DATABASE_URL, to query what the timings learned")
    parser.add_argument("--stop-after-hours", type=int, metavar="N",
                        help="stop each simulation after N simulated hours of this run, keeping its database to "
                             "go on with --resume (needs CARRIERPAY_DATABASE_URL)")
    parser.add_argument("--stop-by", metavar="HH:MM",
                        help="stop each simulation at the end of the first simulated hour that ends after this "
                             "UTC wall time (today, or tomorrow if it has passed), keeping its database")
    parser.add_argument("--resume", action="store_true",
                        help="go on with the kept simulations of these timings and population from the hour "
                             "they stopped at (the same --subscriptions, --days and other options)")
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--skip-due", action="store_true")
    args = parser.parse_args()

    url = os.environ.get("CARRIERPAY_DATABASE_URL")
    stop = None
    if args.stop_after_hours is not None or args.stop_by:
        stop = StopAt(hours=args.stop_after_hours, wall=wall_time_today(args.stop_by) if args.stop_by else None)
    # a run that stops or resumes keeps its databases: that is what it resumes
    args.keep = args.keep or stop is not None or args.resume
    if args.keep and not url:
        parser.error("--keep, --stop-after-hours, --stop-by and --resume need CARRIERPAY_DATABASE_URL: an "
                     "embedded cluster is removed when the run ends")
    with Server(url, keep=args.keep) as server:
        print("server:", ", ".join(f"{k}={v}" for k, v in server.settings().items()), f"cpus={os.cpu_count()}")
        if not args.skip_sim:
            print(f"(a) {args.subscriptions} daily subscriptions on {args.carriers} carriers, {args.days} days"
                  + (f", seed {args.seed}" if args.seed else "")
                  + ("" if args.habits == "hour-and-day" else f", top-up habits: {args.habits}"))
            timings = tuple(args.timings.split(","))

            def run(timing: str, url: str | None = None) -> SimResult | None:
                return simulate(server, timing, args.subscriptions, args.days, args.carriers, args.batch,
                                args.decay, url=url, check_below=args.check_below, hold_a_day=args.hold_a_day,
                                seed=args.seed, habits=args.habits, serve_workers=args.serve_workers,
                                resume=args.resume, stop=stop)

            if args.parallel:
                # Each timing has its own database and connection: on two cores they run side by side.
                # The databases are made first, one after the other (migrations are not thread-safe).
                names = [sim_db_name(timing, args.habits, args.seed) for timing in timings]
                urls = [server.url(name) if args.resume else server.fresh_db(name) for name in names]
                with ThreadPoolExecutor(max_workers=2) as pool:
                    results = list(pool.map(run, timings, urls))
            else:
                results = [run(timing) for timing in timings]
            if None in results:
                results = []  # stopped before the end: nothing to report yet
            for r in results:
                print(f"  {r.timing:9s}: {r.renewals} renewals collected ({r.full_price_renewals} at full price), "
                      f"revenue {r.revenue_units:.0f} full-price units {r.revenue}, {r.calls} charge calls, "
                      f"{r.calls / max(r.renewals, 1):.3f} calls per renewal, "
                      f"{r.renewals / max(r.calls, 1):.4f} renewals per call; end states {r.statuses}; "
                      f"best hours {r.best_hours}; {r.seconds:.0f} s")
                c = r.causes
                print(f"  {'':9s}  periods: {c['periods_begun']} begun, {c['collected_full']} collected at full price, "
                      f"{c['collected_stepped']} stepped down, {c['owed_at_end']} owed at the end, "
                      f"{c['periods_begun'] - c['collected_full'] - c['collected_stepped'] - c['owed_at_end']} "
                      f"written off (suspension restarts, cancellations); failed calls {c['failed_full']} at full "
                      f"price, {c['failed_stepped']} stepped down; {c['days_allowance_spent']} subscription-days "
                      f"with all 3 attempts failed; {c['balance_queries']} balance queries")
                print(f"  {'':9s}  seconds by phase: "
                      + ", ".join(f"{k} {v:.0f}" for k, v in r.phases.items() if v))
                if r.timing in ("subscriber", "subscriber_check", "subscriber_query"):
                    t = r.timing_state
                    print(f"  {'':9s}  subscriber state: {t['subscribers']} subscribers, {t['row_bytes']} bytes a row, "
                          f"{t['stored_bytes_per_subscriber']} bytes each as stored with its index; "
                          f"{t['explorations']} of {t['choices']} placed attempts explored "
                          f"({float(t['exploration_share'] or 0) * 100:.1f}%); top-up rhythm: "
                          f"{t['with_topup']} with a top-up seen, {t['on_rhythm']} planned on a rhythm of "
                          f"2+ days (mean {t['mean_rhythm_days']}), {t['waits']} attempts moved to a "
                          f"likely top-up day")
                    print(f"  {'':9s}  habit test (best hours' success over exploring): "
                          + ", ".join(f"{h['carrier']} {h['lift'] if h['lift'] is not None else '-'} "
                                      f"({h['chosen']}/{h['explored']} sampled"
                                      f"{'' if h['habitual'] else ', fixed hours'})"
                                      for h in t.get("habits", [])))
            fixed = results[0] if results else None
            fixed_rpc = fixed.renewals / max(fixed.calls, 1) if fixed else 0
            for other in results[1:]:
                rpc = other.renewals / max(other.calls, 1)
                if other.causes["balance_queries"]:
                    # a balance query is a carrier call too
                    calls = other.calls + other.causes["balance_queries"]
                    print(f"  {other.timing} - {fixed.timing}: charge calls and balance queries {calls} "
                          f"({calls / max(fixed.calls + fixed.causes['balance_queries'], 1):.3f} x)")
                print(f"  {other.timing} - {fixed.timing}: renewals {other.renewals - fixed.renewals:+d} "
                      f"({(other.renewals / max(fixed.renewals, 1) - 1) * 100:+.1f}%), revenue units "
                      f"{other.revenue_units - fixed.revenue_units:+.0f} "
                      f"({(other.revenue_units / max(fixed.revenue_units, 1) - 1) * 100:+.1f}%), calls "
                      f"{other.calls - fixed.calls:+d} ({other.calls / max(fixed.calls, 1):.3f} x), renewals per call "
                      f"{rpc - fixed_rpc:+.4f} ({(rpc / max(fixed_rpc, 1e-9) - 1) * 100:+.1f}%)")
        if not args.skip_due:
            print(f"(b) sched.run_due with {args.due} subscriptions due at once (batches of {args.batch})")
            d = due_rate(server, args.due, args.batch, args.due_seconds)
            print(f"  bulk insert {d['insert_s']:.1f} s; queued {d['queued']} charges in {d['elapsed_s']:.1f} s "
                  f"= {d['rate']:.0f} per second ({d['batches']} run_due calls, p50 {d['batch_p50_s']:.2f} s, "
                  f"max {d['batch_max_s']:.2f} s per batch)")


if __name__ == "__main__":
    main()
