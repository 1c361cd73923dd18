-- Per-subscriber charging times (product retry_timing 'subscriber'): each subscriber's own success by
-- local hour, shrunk towards the carrier × hour rate while their history is thin, times the first
-- attempt of each period and every retry, inside the charging window and the day's attempt allowance
-- and, where their history shows a top-up rhythm, puts a period's first attempt on a likely top-up day
-- (docs/scheduling.md, "Per-subscriber timing"). State: 60 bytes a subscriber (cp.subscriber_timing).

-- How strongly the carrier × hour rate counts against a subscriber's own attempts at that hour: as
-- many pseudo-attempts as this, so four of their own outcomes weigh as much as the carrier's habit.
create or replace function cp.timing_prior_weight() returns float8
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$ select 4.0::float8 $$;

-- How many of a subscriber's best-scoring hours a retry may take the soonest of (never more than the
-- day's attempt allowance): two, as measured in benchmarks/RESULTS.md, between waiting a day for the
-- single best hour (fewest calls, fewest renewals) and spreading the allowance like best_hour does.
create or replace function cp.timing_retry_hours() returns integer
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$ select 2 $$;

-- How long after a top-up seen began a subscriber-timed retry goes at the soonest allowed slot rather
-- than at their best hours: what a top-up leaves after a full price drains by 4% an hour in the habits
-- seen, so a stepped-down retry the next day finds little of it.
create or replace function cp.timing_fresh_topup() returns interval
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$ select interval '2 hours' $$;

-- From how many days between a subscriber's likely top-up days a retry after a stepped-down failure, on a
-- day that is not one of them, waits for their single best hour instead of the soonest of their best
-- (cp.timing_retry_hours()): with a long cycle most days bring no money, and the best hour, the one just
-- after their usual top-up, is the one that can still catch a top-up come early. Three, as measured in
-- benchmarks/RESULTS.md (a11): from two days on, the same wait saved more calls but lost more revenue.
create or replace function cp.timing_long_cycle_days() returns integer
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$ select 3 $$;

-- The share of timed attempts (subscriber and best_hour timings) placed at a random allowed slot, so
-- hours never tried can still be learned; the rest go to the best-scoring hours.
create or replace function cp.timing_exploration_share() returns float8
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$ select 0.1::float8 $$;

-- A subscriber's expected success at a local hour: their own successes and attempts there (from
-- p_hours, null when none yet) plus the carrier's smoothed rate at that hour as prior pseudo-counts.
create or replace function cp.timing_score(p_hours bytea, p_hour integer, p_carrier_attempts bigint,
                                           p_carrier_successes bigint)
returns float8
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select (coalesce(pg_catalog.get_byte(p_hours, 24 + p_hour), 0)
            + cp.timing_prior_weight() * (coalesce(p_carrier_successes, 0) + 1)::float8
              / (coalesce(p_carrier_attempts, 0) + 2))
           / (coalesce(pg_catalog.get_byte(p_hours, p_hour), 0) + cp.timing_prior_weight())
$$;

-- How many renewals a subscriber's history (cp.subscriber_timing.hours) saw succeed, at any hour.
create or replace function cp.timing_successes(p_hours bytea) returns integer
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select coalesce(sum(pg_catalog.get_byte(p_hours, 24 + h)), 0)::int from generate_series(0, 23) h
$$;

-- One in how many attempts the subscriber timing places at a subscriber's best hours is sampled for the
-- habit test (every exploring attempt is): about as many as explore.
create or replace function cp.timing_probe_every() returns integer
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$ select 10 $$;

-- How many successes a subscriber's history must hold before their attempts are sampled for the habit
-- test: before that, their best hours are mostly the carrier's, which says nothing of their own habit.
-- Three: with two, an early verdict at 10,000 subscriptions could take a habitual carrier for one
-- without habits for some days (benchmarks/RESULTS.md, a15).
create or replace function cp.timing_habit_min_history() returns integer
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$ select 3 $$;

-- How many sampled attempts of each kind (exploring, chosen) a carrier needs folded before the habit
-- test may find it without habits.
create or replace function cp.timing_habit_min_attempts() returns integer
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$ select 100 $$;

-- How much better than chance (exploring attempts) the attempts at subscribers' best hours must succeed
-- for a carrier's subscribers to count as keeping habitual hours: 1.3 times as often. In the benchmark
-- the ratio is 0.9-1.2 where top-up hours are drawn afresh each time and 1.4-2.0 where they are habits
-- (benchmarks/RESULTS.md, a15).
create or replace function cp.timing_habit_lift() returns float8
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$ select 1.3::float8 $$;

-- Past how many folded attempts of a kind a carrier's evidence is halved, so a verdict can change when
-- its subscribers' habits do.
create or replace function cp.timing_habit_memory() returns integer
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$ select 2000 $$;

-- Whether a carrier's subscribers keep habitual top-up hours, as the subscriber timing needs: unless
-- the attempts it placed at their best hours succeed less often than cp.timing_habit_lift() times its
-- exploring ones (a random slot, chosen by a coin on the same occasions, so the comparison is not bent
-- by where the timing chose to charge), by more than the standard error of that difference, over
-- at least cp.timing_habit_min_attempts() of each: a habit is assumed until shown absent, and noise in
-- a thin sample does not end it. Where it is absent, the subscriber timing charges at the product's
-- fixed hours, except its exploration share: half exploring, half at the subscriber's best hours
-- (probes), so the test goes on and the verdict can change.
create or replace function cp.timing_hours_habitual(p_carrier_id integer) returns boolean
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select coalesce((
        select least(h.explored, h.chosen) < cp.timing_habit_min_attempts()
               or x.chosen_rate - cp.timing_habit_lift() * x.explored_rate
                  + sqrt(x.chosen_rate * (1 - x.chosen_rate) / h.chosen
                             + cp.timing_habit_lift() ^ 2 * x.explored_rate * (1 - x.explored_rate) / h.explored) >= 0
        from cp.timing_habit h
        cross join lateral (select h.chosen_successes::float8 / nullif(h.chosen, 0) as chosen_rate,
                                   h.explored_successes::float8 / nullif(h.explored, 0) as explored_rate) x
        where h.carrier_id = p_carrier_id), true)
$$;

-- Under which expected success (cp.timing_score at the hour) a full-price renewal of a subscriber-timed
-- product is preceded by a balance query, where the carrier's terms make that worth it
-- (cp.balance_before_renewal): 0.3, where the benchmark's simulated queries kept the most revenue for
-- the queries they cost (benchmarks/RESULTS.md, a6).
create or replace function cp.timing_query_below() returns float8
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$ select 0.3::float8 $$;

-- Whether a carrier's renewals that will likely fail are queried first: it offers the balance operation
-- and its terms (terms.call_costs, one unit of the operator's choosing: a fee, or a share of a scarce
-- throughput budget) make a failed charge cost more than a query.
create or replace function cp.balance_before_renewal(p_carrier_id integer) returns boolean
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select coalesce(c.spec->'operations' ? 'balance'
                    and (c.spec#>>'{terms,call_costs,charge_failed}')::bigint
                        > (c.spec#>>'{terms,call_costs,balance}')::bigint, false)
    from cp.carrier c where c.carrier_id = p_carrier_id
$$;

-- Which of a carrier's due renewals (p_subscription_ids, locked by the caller) get a balance query
-- instead of a charge: subscriber-timed products at the full price (nothing stepped down or collected
-- in the period yet), not answered "sufficient" by a query in the last hour, whose subscriber's expected
-- success at this local hour is under cp.timing_query_below(), on a carrier whose subscribers keep
-- habitual hours (elsewhere the expectation says nothing). The caller asks only for carriers where
-- cp.balance_before_renewal holds.
create or replace function cp.renewals_to_query(p_subscription_ids bigint[]) returns bigint[]
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select coalesce(array_agg(s.subscription_id order by s.subscription_id), '{}')
    from cp.subscription s
    join cp.product p on p.product_id = s.product_id and p.retry_timing = 'subscriber'
    cross join lateral (select extract(hour from cp.clock_now() at time zone cp.subscriber_timezone(s.subscriber_id))::int
                               as local_hour) l
    left join cp.subscriber_timing t on t.subscriber_id = s.subscriber_id
    left join cp.hour_stats hs on hs.carrier_id = s.carrier_id and hs.local_hour = l.local_hour
    where s.subscription_id = any (p_subscription_ids)
      and s.retry_level = 0 and s.collected_in_period = 0
      and (s.balance_checked_at is null or s.balance_checked_at < cp.clock_now() - interval '1 hour')
      and cp.timing_score(t.hours, l.local_hour, hs.attempts, hs.successes) < cp.timing_query_below()
      and cp.timing_hours_habitual(s.carrier_id)
$$;

-- Which of the allowed local slots (p_slots, already inside the charging window and the attempt
-- allowance) a subscriber's next attempt takes: the soonest of the p_top best-scoring hours (so a
-- retry uses the day's allowance at good hours rather than waiting a day for the single best), or,
-- when p_explore, a random one. Counts both in cp.timing_choices / cp.timing_explorations for reports,
-- and keeps for the habit test (cp.timing_probe), once the subscriber's history holds
-- cp.timing_habit_min_history() successes, every exploring choice and a sample of the others (all of
-- them with p_probe: the caller's probes on a carrier the test found without habits).
create or replace function cp.subscriber_slot(p_subscriber_id bigint, p_carrier_id integer, p_slots timestamp[],
                                              p_explore boolean, p_top integer default 1,
                                              p_probe boolean default false)
returns timestamp
language plpgsql volatile
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_hours bytea;
    v_choice bigint;
    v_slot timestamp;
begin
    if coalesce(cardinality(p_slots), 0) = 0 then
        return null;
    end if;
    select t.hours into v_hours from cp.subscriber_timing t where t.subscriber_id = p_subscriber_id;
    v_choice := pg_catalog.nextval('cp.timing_choices');
    if p_explore then
        perform pg_catalog.nextval('cp.timing_explorations');
        v_slot := p_slots[1 + floor(random() * cardinality(p_slots))::int];
    else
        v_slot := (
            select r.slot
            from (select x.slot,
                         dense_rank() over (order by cp.timing_score(v_hours, extract(hour from x.slot)::int,
                                                                      hs.attempts, hs.successes) desc) as score_rank
                  from unnest(p_slots) x (slot)
                  left join cp.hour_stats hs
                         on hs.carrier_id = p_carrier_id and hs.local_hour = extract(hour from x.slot)) r
            where r.score_rank <= greatest(p_top, 1)
            order by r.slot
            limit 1);
    end if;
    -- every exploring attempt and a sample of the chosen ones, for the habit test
    if v_slot is not null and (p_explore or p_probe or v_choice % cp.timing_probe_every() = 0)
       and cp.timing_successes(v_hours) >= cp.timing_habit_min_history() then
        insert into cp.timing_probe as e (subscriber_id, carrier_id, local_slot, explored)
        values (p_subscriber_id, p_carrier_id, v_slot, p_explore)
        on conflict (subscriber_id) do update
            set carrier_id = excluded.carrier_id, local_slot = excluded.local_slot, explored = excluded.explored;
    end if;
    return v_slot;
end
$$;

-- How strongly "every day" counts against a subscriber's own gaps between top-ups when their cycle is
-- planned with: as one gap, so a single gap of three days plans two and it takes a few to trust.
create or replace function cp.timing_rhythm_prior_weight() returns float8
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$ select 1.0::float8 $$;

-- The whole days between a subscriber's likely top-up days to plan with: their learned cycle
-- (p_cycle_tenths over p_gaps gaps) shrunk towards every day, rounded; 1 (every day) with no history.
create or replace function cp.timing_rhythm_days(p_cycle_tenths smallint, p_gaps smallint) returns integer
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select greatest(1, round(((coalesce(p_gaps, 0) * coalesce(p_cycle_tenths, 10) / 10.0
                               + cp.timing_rhythm_prior_weight())
                              / (coalesce(p_gaps, 0) + cp.timing_rhythm_prior_weight()))::numeric)::int)
$$;

-- The subscriber's next likely top-up day on or after p_from: the day of their last top-up seen plus
-- whole cycles (p_days); p_from itself when no rhythm is known (p_last null or every day).
create or replace function cp.timing_rhythm_day(p_last date, p_days integer, p_from date) returns date
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select case when p_last is null or coalesce(p_days, 1) <= 1 or p_from is null then p_from
                else p_last + (ceil((p_from - p_last)::numeric / p_days)::int * p_days) end
$$;

-- When the first attempt of a period falls due (p_due: the period's start): at p_due itself unless
-- the product times by subscriber. Then, where their history shows a top-up rhythm of two days or
-- more, on their next likely top-up day (never more than the carrier's grace days after p_due, else
-- p_due's day): a full-price attempt between top-ups fails and steps the whole period down. On that
-- day (the day that starts at p_due when it is p_due's), at their best hour inside the charging window.
-- An exploring attempt (cp.timing_exploration_share()) ignores the rhythm, so a shorter one is still seen.
-- On a carrier whose subscribers keep no habitual hours (cp.timing_hours_habitual), at p_due, as fixed
-- hours do, unless the attempt explores or probes.
create or replace function cp.first_attempt_time(p_subscription_id bigint, p_due timestamptz) returns timestamptz
language plpgsql volatile
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_subscriber_id bigint;
    v_carrier_id integer;
    v_tz text;
    v_rules jsonb;
    v_local timestamp;
    v_explore boolean := random() < cp.timing_exploration_share();
    v_last date;
    v_days integer;
    v_from date;
    v_day date;
    v_slots timestamp[];
    v_slot timestamp;
begin
    select s.subscriber_id, s.carrier_id into v_subscriber_id, v_carrier_id
    from cp.subscription s join cp.product p using (product_id)
    where s.subscription_id = p_subscription_id and p.retry_timing = 'subscriber';
    if v_subscriber_id is null or p_due is null then
        return p_due;
    end if;
    if not cp.timing_hours_habitual(v_carrier_id) then
        perform pg_catalog.nextval('cp.timing_choices');  -- a placement of the timing all the same
        return p_due;  -- fixed hours' time: the habit test goes on with retries
    end if;
    v_tz := cp.subscriber_timezone(v_subscriber_id);
    v_rules := cp.effective_rules(v_carrier_id);
    v_local := p_due at time zone v_tz;
    -- the period's first day of slots: p_due and the next 23 whole local hours, inside the window
    v_slots := array(select x.slot
                     from (select v_local as slot
                           union all
                           select date_trunc('hour', v_local) + make_interval(hours => h)
                           from generate_series(1, 23) h) x
                     where cp.in_window(x.slot::time, v_rules->>'charging_hours')
                     order by x.slot);
    select (t.last_topup_at at time zone v_tz)::date, cp.timing_rhythm_days(t.cycle_tenths, t.cycle_gaps)
    into v_last, v_days
    from cp.subscriber_timing t where t.subscriber_id = v_subscriber_id;
    if not v_explore and v_days > 1 then
        -- a period already begun (paid late) is placed from today, not from its start
        v_from := greatest(v_local::date, (cp.clock_now() at time zone v_tz)::date);
        v_day := cp.timing_rhythm_day(v_last, v_days, v_from);
        if v_day > v_from and v_day <= v_local::date + coalesce((v_rules->>'grace_days')::int, 0) then
            perform pg_catalog.nextval('cp.timing_rhythm_waits');
            v_slots := array(select x.slot
                             from (select v_day + make_interval(hours => h) as slot from generate_series(0, 23) h) x
                             where x.slot >= v_local and cp.in_window(x.slot::time, v_rules->>'charging_hours')
                             order by x.slot);
        elsif v_day = v_local::date
              and exists (select 1 from unnest(v_slots) x (slot) where x.slot::date = v_day) then
            -- the top-up day is p_due's own: its slots, not the next morning's
            v_slots := array(select x.slot from unnest(v_slots) x (slot) where x.slot::date = v_day order by x.slot);
        end if;
    end if;
    v_slot := cp.subscriber_slot(v_subscriber_id, v_carrier_id, v_slots, v_explore);
    return coalesce(v_slot at time zone v_tz, p_due);
end
$$;

-- Fold the appended renewal outcomes into each subscriber's row: attempts and successes per local hour
-- (48 bytes), both halved once an hour passes 60 attempts (recent habits weigh more, a byte never
-- overflows); and their top-up rhythm: when the last top-up seen began (a renewal collected 18 hours or
-- more after the one before: a balance back) and, from the whole days since the one before (at most
-- 7), the cycle between top-ups, each new gap weighing half. And the outcomes of the sampled attempts
-- (cp.timing_probe) into their carrier's habit test (cp.timing_habit). One folder at a time (the
-- others skip): two would read the same old row. Returns how many subscribers were updated.
create or replace function cp.fold_subscriber_hours() returns integer
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_rows integer;
begin
    if not pg_catalog.pg_try_advisory_xact_lock(1129337928) then  -- 'CPTH'
        return 0;
    end if;
    with folded as (
        delete from cp.subscriber_hour_delta returning subscriber_id, local_hour, success, settled_at
    ), probed as (
        -- a sampled attempt's outcome: a renewal of its subscriber settled in its slot's hour or the next
        delete from cp.timing_probe e
        using folded d
        where d.subscriber_id = e.subscriber_id
          and d.settled_at at time zone cp.subscriber_timezone(d.subscriber_id)
              between date_trunc('hour', e.local_slot) and date_trunc('hour', e.local_slot) + interval '2 hours'
        returning e.carrier_id, e.explored, d.success
    ), habit as (
        insert into cp.timing_habit as h (carrier_id, explored, explored_successes, chosen, chosen_successes)
        select x.carrier_id, count(*) filter (where x.explored), count(*) filter (where x.explored and x.success),
               count(*) filter (where not x.explored), count(*) filter (where not x.explored and x.success)
        from probed x group by x.carrier_id
        on conflict (carrier_id) do update
            set (explored, explored_successes, chosen, chosen_successes) = (
                select a / k, b / k, c / k, d / k
                from (select h.explored + excluded.explored as a, h.explored_successes + excluded.explored_successes as b,
                             h.chosen + excluded.chosen as c, h.chosen_successes + excluded.chosen_successes as d) n
                cross join lateral (select case when greatest(n.a, n.c) > cp.timing_habit_memory() then 2 else 1 end as k) m)
    ), sums as (
        select subscriber_id, local_hour, count(*)::int as a, (count(*) filter (where success))::int as s,
               min(settled_at) filter (where success) as first_success
        from folded group by 1, 2
    ), merged as (
        select t.subscriber_id,
               pg_catalog.decode(string_agg(lpad(to_hex(n.a), 2, '0'), '' order by h.h)
                                 || string_agg(lpad(to_hex(n.s), 2, '0'), '' order by h.h), 'hex') as hours,
               min(d.first_success) as first_success
        from (select distinct subscriber_id from sums) t
        cross join generate_series(0, 23) h (h)
        left join cp.subscriber_timing o on o.subscriber_id = t.subscriber_id
        left join sums d on d.subscriber_id = t.subscriber_id and d.local_hour = h.h
        cross join lateral (select coalesce(pg_catalog.get_byte(o.hours, h.h), 0) + coalesce(d.a, 0) as a,
                                   coalesce(pg_catalog.get_byte(o.hours, 24 + h.h), 0) + coalesce(d.s, 0) as s) x
        cross join lateral (select least(case when x.a > 60 then x.a / 2 else x.a end, 255) as a,
                                   least(case when x.a > 60 then x.s / 2 else x.s end, 255) as s) n
        group by t.subscriber_id
    ), rhythm as (
        -- a renewal collected 18 hours or more after the last top-up seen began is a new top-up;
        -- closer, the same one (a top-up late in the evening still pays the next morning)
        select m.subscriber_id, m.hours, o.last_topup_at, o.cycle_tenths, o.cycle_gaps, m.first_success,
               m.first_success >= o.last_topup_at + interval '18 hours' as new_topup,
               least(greatest(round(extract(epoch from m.first_success - o.last_topup_at) / 86400), 1), 7) as gap
        from merged m
        left join cp.subscriber_timing o using (subscriber_id)
    )
    insert into cp.subscriber_timing as st (subscriber_id, hours, last_topup_at, cycle_tenths, cycle_gaps)
    select subscriber_id, hours,
           case when new_topup or last_topup_at is null then coalesce(first_success, last_topup_at)
                else last_topup_at end,
           -- each new gap (whole days, at most a week) weighs half
           case when new_topup then round(case when cycle_tenths is null then 10 * gap
                                               else (cycle_tenths + 10 * gap) / 2.0 end)
                else cycle_tenths end::smallint,
           case when new_topup then least(cycle_gaps + 1, 15) else coalesce(cycle_gaps, 0) end::smallint
    from rhythm
    on conflict (subscriber_id) do update
        set hours = excluded.hours, last_topup_at = excluded.last_topup_at,
            cycle_tenths = excluded.cycle_tenths, cycle_gaps = excluded.cycle_gaps;
    get diagnostics v_rows = row_count;
    return v_rows;
end
$$;

-- Where subscriber timing stands, for benchmarks and DBAs: subscribers with a history, the bytes of
-- one's row (tuple and line pointer; the primary key adds about 20 more), the table and index bytes per
-- subscriber as stored (pages not yet full included), and the share of placed attempts that explored.
create or replace function report.subscriber_timing() returns table (
    subscribers bigint, row_bytes numeric, stored_bytes_per_subscriber numeric, choices bigint, explorations bigint,
    exploration_share numeric
)
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select t.subscribers, t.row_bytes,
           round(pg_catalog.pg_total_relation_size('cp.subscriber_timing')::numeric / nullif(t.subscribers, 0), 1),
           c.choices, e.explorations, round(e.explorations::numeric / nullif(c.choices, 0), 4)
    from (select count(*) as subscribers, round(avg(pg_catalog.pg_column_size(x.*) + 4), 1) as row_bytes
          from cp.subscriber_timing x) t,
         (select case when is_called then last_value else 0 end as choices from cp.timing_choices) c,
         (select case when is_called then last_value else 0 end as explorations from cp.timing_explorations) e
$$;

-- What the subscriber timing learned of top-up rhythms, for benchmarks and DBAs: subscribers with a
-- top-up seen, those planned on a rhythm of two days or more, its mean among them, and how many
-- attempts were moved to a later likely top-up day.
create or replace function report.subscriber_rhythm() returns table (
    with_topup bigint, on_rhythm bigint, mean_rhythm_days numeric, waits bigint
)
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select count(*) filter (where t.last_topup_at is not null),
           count(*) filter (where cp.timing_rhythm_days(t.cycle_tenths, t.cycle_gaps) > 1),
           round(avg(cp.timing_rhythm_days(t.cycle_tenths, t.cycle_gaps))
                 filter (where cp.timing_rhythm_days(t.cycle_tenths, t.cycle_gaps) > 1), 2),
           (select case when is_called then last_value else 0 end from cp.timing_rhythm_waits)
    from cp.subscriber_timing t
$$;

-- The habit test per carrier, for benchmarks and DBAs: the sampled attempts folded (exploring, and at the
-- subscribers' best hours), how many of each succeeded, the ratio of their success rates (the lift) and
-- whether the subscriber timing treats the carrier's subscribers as keeping habitual hours.
create or replace function report.timing_habits() returns table (
    carrier text, explored integer, explored_successes integer, chosen integer, chosen_successes integer,
    lift numeric, habitual boolean
)
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select c.code, h.explored, h.explored_successes, h.chosen, h.chosen_successes,
           round((h.chosen_successes::numeric / nullif(h.chosen, 0))
                 / nullif(h.explored_successes::numeric / nullif(h.explored, 0), 0), 2),
           cp.timing_hours_habitual(c.carrier_id)
    from cp.carrier c
    left join cp.timing_habit h on h.carrier_id = c.carrier_id
    order by c.code
$$;

-- Count charge attempts and their successes in the carrier × local hour statistics: append-only rows,
-- one per carrier × hour of the batch (sched.fold_hour_stats folds them, so no shared counter row is
-- updated on the payment path).
create or replace function cp.record_hour_stats(p_procs cp.procedure[], p_success boolean) returns void
language sql
set search_path = pg_catalog, cp, pg_temp
as $$
    insert into cp.hour_stats_delta (carrier_id, local_hour, attempts, successes)
    select p.carrier_id,
           extract(hour from cp.clock_now() at time zone cp.subscriber_timezone(p.subscriber_id))::smallint,
           count(*), case when p_success then count(*) else 0 end
    from unnest(p_procs) p
    group by 1, 2;
    -- and per subscriber, for renewals (folded into cp.subscriber_timing, db/procedures/140_timing.sql)
    insert into cp.subscriber_hour_delta (subscriber_id, local_hour, success, settled_at)
    select p.subscriber_id,
           extract(hour from cp.clock_now() at time zone cp.subscriber_timezone(p.subscriber_id))::smallint, p_success,
           cp.clock_now()
    from unnest(p_procs) p
    where p.subscription_id is not null
$$;

-- When to try each subscription's charge next: the product's fixed hours, or the soonest of the
-- carrier's best local hours by observed success rate (its top max_attempts_per_day hours; 10% of
-- retries explore a random slot of the coming day instead), inside the charging window, at least an
-- hour away, and on a later day once the day's attempts are used up. Candidates are the next 48 whole
-- hours plus the window's opening moments, so a window shorter than an hour is still reached. The
-- candidates and their ranks depend only on the carrier and the earliest local moment, so they are
-- worked out once per such pair in the batch, then each subscription picks among them. The subscriber
-- timing (cp.subscriber_slot) on a carrier whose subscribers keep no habitual hours
-- (cp.timing_hours_habitual): the product's fixed hours, except its exploring and probing retries.
create or replace function cp.next_retry_times(p_subscription_ids bigint[])
returns table (subscription_id bigint, retry_at timestamptz)
language plpgsql volatile
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    -- PL/pgSQL, not SQL, so the plan of this query is kept between calls rather than made on each one.
    return query
    with sub as (
        select s.subscription_id, s.subscriber_id, b.carrier_id, coalesce(b.timezone, k.timezone) as tz,
               p.retry_timing,
               p.fixed_retry_hours, s.attempts_day, s.attempts_today,
               random() as explore_draw,  -- one decision per retry, not per slot
               -- a top-up seen in the last hours and an attempt at the full price (the level the failure
               -- is about to move): what the top-up left may still cover the stepped-down price
               coalesce(t.last_topup_at >= cp.clock_now() - cp.timing_fresh_topup() and s.retry_level = 0, false)
                   as fresh_topup,
               s.retry_level, t.last_topup_at, cp.timing_rhythm_days(t.cycle_tenths, t.cycle_gaps) as rhythm_days
        from cp.subscription s
        join cp.subscriber b on b.subscriber_id = s.subscriber_id
        left join cp.subscriber_timing t on t.subscriber_id = s.subscriber_id
        join cp.carrier k on k.carrier_id = b.carrier_id
        join cp.product p on p.product_id = s.product_id
        where s.subscription_id = any (p_subscription_ids)
    ), carrier_rules as materialized (  -- once per carrier, not once per subscription
        select c.carrier_id, coalesce(r.rules->>'charging_hours', '') as hours,
               (r.rules->>'max_attempts_per_day')::int as max_attempts,
               cp.timing_hours_habitual(c.carrier_id) as habitual
        from (select distinct carrier_id from sub) c
        cross join lateral (select cp.effective_rules(c.carrier_id) as rules) r
    ), zone as materialized (
        select t.tz, cp.clock_now() at time zone t.tz as local_now from (select distinct tz from sub) t
    ), prepared as (
        select sub.subscription_id, sub.subscriber_id, sub.carrier_id, sub.tz,
               -- subscriber timing on a carrier without habitual hours: the product's fixed hours, but for a
               -- quarter of the exploration share, half of it exploring and half at the subscriber's best
               -- hours (probes of the habit test)
               case when x.fallback then 'fixed' else sub.retry_timing end as retry_timing,
               sub.explore_draw < cp.timing_exploration_share()
                                  / case when sub.retry_timing = 'subscriber' and not r.habitual then 8 else 1 end
                   as explore,
               sub.fixed_retry_hours, sub.fresh_topup and r.habitual as fresh_topup, r.habitual,
               -- a stepped-down attempt failed on a day that is not a likely top-up day of a long cycle
               sub.retry_level > 0 and sub.rhythm_days >= cp.timing_long_cycle_days()
                   and cp.timing_rhythm_day((sub.last_topup_at at time zone sub.tz)::date, sub.rhythm_days,
                                            z.local_now::date) > z.local_now::date as between_topups,
               r.hours, greatest(r.max_attempts, 1) as best_hours,
               case when sub.attempts_day = z.local_now::date and sub.attempts_today >= r.max_attempts
                    then greatest(z.local_now + interval '1 hour', z.local_now::date + 1)
                    else z.local_now + interval '1 hour' end as earliest
        from sub
        join carrier_rules r using (carrier_id)
        join zone z using (tz)
        -- a fixed-hours placement of the subscriber timing counts among its choices (cp.timing_choices),
        -- so the reported exploration share is a share of all its placements
        cross join lateral (select case when sub.retry_timing = 'subscriber' and not r.habitual
                                             and sub.explore_draw >= cp.timing_exploration_share() / 4
                                        then pg_catalog.nextval('cp.timing_choices') > 0
                                        else false end as fallback) x
    ), start as (
        select distinct carrier_id, hours, best_hours, earliest from prepared
    ), candidate as (
        -- each allowed slot with its hour's smoothed success rate, ranked (equal rates share a rank)
        select st.carrier_id, st.hours, st.best_hours, st.earliest, x.slot,
               dense_rank() over (partition by st.carrier_id, st.hours, st.earliest
                                  order by (coalesce(hs.successes, 0) + 1)::float / (coalesce(hs.attempts, 0) + 2) desc)
                   as hour_rank
        from start st
        cross join lateral (
            select date_trunc('hour', st.earliest) + make_interval(hours => h) as slot
            from generate_series(1, 48) h
            union
            -- the window's opening moment, which need not fall on the hour (e.g. 08:15-08:45)
            select st.earliest::date + make_interval(days => d) + split_part(st.hours, '-', 1)::time
            from generate_series(0, 2) d
            where st.hours <> ''
        ) x
        left join cp.hour_stats hs on hs.carrier_id = st.carrier_id and hs.local_hour = extract(hour from x.slot)
        where x.slot >= st.earliest and cp.in_window(x.slot::time, nullif(st.hours, ''))
    ), choice as (
        -- per start: the soonest slot, the soonest of the day's best hours (as many of them as attempts a
        -- day allow, so retries use the day's allowance at good hours instead of waiting for the single
        -- best), and the coming day's slots for exploring
        select carrier_id, hours, earliest, min(slot) as first_slot,
               min(slot) filter (where hour_rank <= best_hours) as best_slot,
               array_agg(slot order by slot) filter (where slot < earliest + interval '1 day') as day_slots
        from candidate group by carrier_id, hours, earliest
    ), fixed_choice as (
        -- per start and product: the soonest of the product's fixed hours
        select c.carrier_id, c.hours, c.earliest, f.fixed_retry_hours,
               min(c.slot) filter (where extract(hour from c.slot)::int = any (f.fixed_retry_hours)) as fixed_slot
        from (select distinct carrier_id, hours, earliest, fixed_retry_hours from prepared
              where retry_timing = 'fixed') f
        join candidate c using (carrier_id, hours, earliest)
        group by 1, 2, 3, 4
    )
    select p.subscription_id,
           (coalesce(case when p.retry_timing = 'fixed'
                         -- fixed hours first; if none falls inside the window, the window's first hour
                         then fc.fixed_slot
                         -- just after a top-up (money there now): the soonest allowed slot, before it
                         -- drains; else the soonest of the subscriber's own best hours
                         when p.retry_timing = 'subscriber' and p.fresh_topup then c.first_slot
                         when p.retry_timing = 'subscriber' then ps.slot
                         -- explore: any allowed slot of the coming day may win
                         when p.explore then c.day_slots[1 + floor(random() * cardinality(c.day_slots))::int]
                         else c.best_slot end,
                    c.first_slot, p.earliest) at time zone p.tz)::timestamptz
    from prepared p
    left join choice c using (carrier_id, hours, earliest)
    left join fixed_choice fc using (carrier_id, hours, earliest, fixed_retry_hours)
    left join lateral (
        select case when p.retry_timing = 'subscriber' and not p.fresh_topup
                    then cp.subscriber_slot(p.subscriber_id, p.carrier_id, c.day_slots, p.explore,
                                            case when p.between_topups then 1
                                                 else least(p.best_hours, cp.timing_retry_hours()) end,
                                            p_probe => not p.habitual) end as slot
    ) ps on true;
end
$$;

-- The same for one subscription.
create or replace function cp.next_retry_time(p_subscription_id bigint) returns timestamptz
language sql volatile
set search_path = pg_catalog, cp, pg_temp
as $$
    select retry_at from cp.next_retry_times(array[p_subscription_id])
$$;

-- Fold the append-only hour statistics into their per-carrier × hour totals.
create or replace function sched.fold_hour_stats() returns integer
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_rows integer;
begin
    with folded as (
        delete from cp.hour_stats_delta returning carrier_id, local_hour, attempts, successes
    ), sums as (
        select carrier_id, local_hour, sum(attempts) a, sum(successes) s from folded group by 1, 2
    )
    insert into cp.hour_stats as h (carrier_id, local_hour, attempts, successes)
    select carrier_id, local_hour, a, s from sums
    on conflict (carrier_id, local_hour) do update
        set attempts = h.attempts + excluded.attempts, successes = h.successes + excluded.successes;
    get diagnostics v_rows = row_count;
    perform cp.fold_subscriber_hours();
    return v_rows;
end
$$;
