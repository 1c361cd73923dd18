-- The subscriber timing's top-up rhythm: learned from their own collected renewals, "every day" while the
-- history is thin; a period's first attempt goes on their next likely top-up day, never past the
-- carrier's grace days, inside the charging window; exploring attempts ignore it, and waits are counted.
\set QUIET on
begin;
\ir fixtures/world.sql
\ir fixtures/timed_subscription.sql
select plan(29);

select pg_temp.timed_subscription('rclub', '+2348020000071');

-- The first charge succeeds at 13:00 Lagos on 4 March (12:00 UTC): its time is appended, then folded
-- as the first top-up seen.
select pg_temp.collect_activation();
select is((select settled_at from cp.subscriber_hour_delta where subscriber_id = (select subscriber_id from t)),
          cp.clock_now(), 'a renewal''s outcome carries when it was known');
select sched.fold_hour_stats();
create temp view rhythm as
select to_char(last_topup_at at time zone 'UTC', 'MM-DD HH24') || ' ' || coalesce(cycle_tenths::text, 'none') || ' ' || cycle_gaps as r
from cp.subscriber_timing where subscriber_id = (select subscriber_id from t);
select is((select r from rhythm), '03-04 12 none 0', 'one top-up seen: remembered, no cycle yet');

-- Outcomes arrive as the payment path appends them (a success, or a failure, at a moment).
create function pg_temp.outcome(p_at timestamptz, p_success boolean) returns void language sql as $$
    insert into cp.subscriber_hour_delta (subscriber_id, local_hour, success, settled_at)
    values ((select subscriber_id from t), extract(hour from p_at at time zone 'Africa/Lagos'), p_success, p_at);
    select sched.fold_hour_stats();
$$;
select pg_temp.outcome('2030-03-05 05:00+00', true);
select is((select r from rhythm), '03-04 12 none 0',
          'a success 17 hours later is the same top-up (a late top-up still pays the next morning)');
select pg_temp.outcome('2030-03-07 12:00+00', true);
select is((select r from rhythm), '03-07 12 30 1', 'a new top-up three days later: a cycle of 3.0 days');
select pg_temp.outcome('2030-03-08 12:00+00', false);
select is((select r from rhythm), '03-07 12 30 1', 'a failure teaches no top-up');
select pg_temp.outcome('2030-03-08 13:00+00', true);
select is((select r from rhythm), '03-08 13 20 2', 'a gap of one day pulls 3.0 halfway down to 2.0');
select pg_temp.outcome('2030-03-30 13:00+00', true);
select is((select cycle_tenths from cp.subscriber_timing where subscriber_id = (select subscriber_id from t)),
          45::smallint, 'a gap longer than a week counts as seven days');

-- Thin history is shrunk to every day; the planned cycle and the next likely day.
select is(cp.timing_rhythm_days(null, 0::smallint), 1, 'no history: every day');
select is(cp.timing_rhythm_days(30::smallint, 1::smallint), 2, 'one gap of three days: planned as two');
select is(cp.timing_rhythm_days(30::smallint, 15::smallint), 3, 'many gaps of three days: three');
select is(cp.timing_rhythm_day('2030-03-04', 3, '2030-03-05'), '2030-03-07'::date, 'the next likely day');
select is(cp.timing_rhythm_day('2030-03-04', 3, '2030-03-07'), '2030-03-07'::date, 'a likely day is its own');
select is(cp.timing_rhythm_day(null, 3, '2030-03-05'), '2030-03-05'::date, 'no top-up seen yet: the day itself');

-- The first attempt of a period due 5 March 13:00 Lagos, with a learned three-day rhythm from 4 March:
-- on 7 March, inside the window; exploring attempts stay on the period's first day.
update cp.carrier set rules_override = '{"charging_hours": "08:00-18:00"}' where code = 'test_ng';
update cp.subscriber_timing set last_topup_at = '2030-03-04 12:00+00', cycle_tenths = 30, cycle_gaps = 15
where subscriber_id = (select subscriber_id from t);
create temp table waits0 as select waits from report.subscriber_rhythm();
select setseed(0.25);
create temp table placed as
select cp.first_attempt_time((select subscription_id from t), '2030-03-05 12:00+00') as at
from generate_series(1, 100);
select ok((select bool_and(cp.in_window((at at time zone 'Africa/Lagos')::time, '08:00-18:00')) from placed),
          'every first attempt is inside the charging window');
select cmp_ok((select count(*) from placed where (at at time zone 'Africa/Lagos')::date = '2030-03-07'), '>=', 80::bigint,
              'most first attempts go on the likely top-up day');
select ok((select bool_and((at at time zone 'Africa/Lagos')::date = '2030-03-07'
                           or at between '2030-03-05 12:00+00' and '2030-03-06 11:00+00') from placed),
          'the others (exploring) stay on the period''s first day');
select ok((select count(*) from placed where (at at time zone 'Africa/Lagos')::date <> '2030-03-07') between 1 and 30,
          'a bounded share explores and ignores the rhythm');
select is((select r.waits - w.waits from report.subscriber_rhythm() r, waits0 w),
          (select count(*) from placed where (at at time zone 'Africa/Lagos')::date = '2030-03-07'),
          'every first attempt moved to a later day is counted');

-- Never past the carrier's grace days: with one grace day, a top-up day two days away is not waited for.
update cp.carrier set rules_override = '{"charging_hours": "08:00-18:00", "grace_days": 1}' where code = 'test_ng';
select ok((select bool_and(cp.first_attempt_time((select subscription_id from t), '2030-03-05 12:00+00')
                           < '2030-03-06 12:00+00') from generate_series(1, 30)),
          'a wait never goes past the grace days: the period''s first day instead');
update cp.carrier set rules_override = '{"charging_hours": "08:00-18:00"}' where code = 'test_ng';

-- Thin history: no wait.
update cp.subscriber_timing set cycle_gaps = 0 where subscriber_id = (select subscriber_id from t);
select ok((select bool_and(cp.first_attempt_time((select subscription_id from t), '2030-03-05 12:00+00')
                           < '2030-03-06 12:00+00') from generate_series(1, 30)),
          'with no gap learned yet the first attempt stays on the period''s first day');

-- A retry just after a top-up seen, of an attempt at the full price: the soonest allowed slot (what the
-- top-up left drains by the hour); otherwise, the subscriber's two best hours (17:00, then 16:00).
-- pg_temp.retried_at: of 20 retries placed now, how many fall at a local day and hour ('DD HH24:MI').
create function pg_temp.retried_at(p_hhmm text) returns bigint language sql as $$
    select count(*) from generate_series(1, 20) g, lateral cp.next_retry_times(array[(select subscription_id from t) + 0 * g]) n
    where to_char(n.retry_at at time zone 'Africa/Lagos', 'DD HH24:MI') = p_hhmm
$$;
update cp.subscriber_timing
set hours = decode(repeat('0a', 24) || repeat('00', 16) || '0809' || repeat('00', 6), 'hex'),
    last_topup_at = cp.clock_now() - interval '1 hour'
where subscriber_id = (select subscriber_id from t);
update cp.subscription set retry_level = 0, attempts_today = 1,
       attempts_day = (cp.clock_now() at time zone 'Africa/Lagos')::date
where subscription_id = (select subscription_id from t);
select setseed(0.25);
select is((select string_agg(distinct to_char(n.retry_at at time zone 'Africa/Lagos', 'DD HH24:MI'), ',')
           from generate_series(1, 20) g, lateral cp.next_retry_times(array[(select subscription_id from t) + 0 * g]) n),
          '04 15:00', 'after a top-up an hour ago, a failure at full price retries at the soonest allowed slot');
update cp.subscription set retry_level = 1 where subscription_id = (select subscription_id from t);
select cmp_ok(pg_temp.retried_at('04 16:00'), '>=', 14::bigint,
              'a failure already stepped down waits for their best hours');

-- A stepped-down failure of a subscriber who tops up every three days or more, on a day that is not one
-- of their likely top-up days: the retry waits for their single best hour (17:00), not the soonest of
-- their two best; on a likely top-up day, with a shorter cycle, or after a failure at full price, the
-- soonest of the two (16:00).
update cp.subscriber_timing set cycle_tenths = 30, cycle_gaps = 15, last_topup_at = cp.clock_now() - interval '1 day'
where subscriber_id = (select subscriber_id from t);
select cmp_ok(pg_temp.retried_at('04 17:00'), '>=', 14::bigint,
              'between the top-ups of a three-day cycle a stepped-down failure waits for the best hour');
update cp.subscriber_timing set last_topup_at = cp.clock_now() - interval '3 days'
where subscriber_id = (select subscriber_id from t);
select cmp_ok(pg_temp.retried_at('04 16:00'), '>=', 14::bigint,
              'on a likely top-up day: the soonest of the two best hours');
update cp.subscriber_timing set cycle_tenths = 20, last_topup_at = cp.clock_now() - interval '1 day'
where subscriber_id = (select subscriber_id from t);
select cmp_ok(pg_temp.retried_at('04 16:00'), '>=', 14::bigint,
              'a two-day cycle is not long: the soonest of the two best hours');
update cp.subscriber_timing set cycle_tenths = 30 where subscriber_id = (select subscriber_id from t);
update cp.subscription set retry_level = 0 where subscription_id = (select subscription_id from t);
select cmp_ok(pg_temp.retried_at('04 16:00'), '>=', 14::bigint,
              'a failure at full price between top-ups: the soonest of the two best hours (it steps down first)');
update cp.subscription set retry_level = 1 where subscription_id = (select subscription_id from t);
update cp.subscriber_timing set cycle_gaps = 0, last_topup_at = cp.clock_now() - interval '1 hour'
where subscriber_id = (select subscriber_id from t);
update cp.subscription set retry_level = 0 where subscription_id = (select subscription_id from t);
update cp.subscriber_timing set last_topup_at = cp.clock_now() - interval '5 hours'
where subscriber_id = (select subscriber_id from t);
select cmp_ok(pg_temp.retried_at('04 16:00'), '>=', 14::bigint,
              'a top-up five hours ago is not fresh: their best hours');
update cp.subscriber_timing set last_topup_at = cp.clock_now() - interval '1 hour'
where subscriber_id = (select subscriber_id from t);
update cp.subscription set attempts_today = 3 where subscription_id = (select subscription_id from t);
select is((select string_agg(distinct to_char(n.retry_at at time zone 'Africa/Lagos', 'DD HH24:MI'), ',')
           from generate_series(1, 20) g, lateral cp.next_retry_times(array[(select subscription_id from t) + 0 * g]) n),
          '05 08:00', 'with the day''s attempts used, even a fresh top-up waits for the next day''s window');

select ok((select row_bytes <= 110 from report.subscriber_timing()),
          'a subscriber''s state with its rhythm is one row of at most 110 bytes');

select * from finish();
rollback;
