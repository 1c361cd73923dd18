-- Per-subscriber timing: the subscriber's own hours, shrunk to the carrier's while their history is
-- thin; 48 bytes of state; inside the charging window and the day's attempts; a bounded exploration.
\set QUIET on
begin;
\ir fixtures/world.sql
\ir fixtures/timed_subscription.sql
select plan(15);

select pg_temp.timed_subscription('tclub', '+2348020000070');

-- A renewal's outcome is appended per subscriber and local hour (13:00 in Lagos), then folded.
select pg_temp.collect_activation();
select is((select count(*) from cp.subscriber_hour_delta where subscriber_id = (select subscriber_id from t)
                  and local_hour = 13 and success), 1::bigint, 'the renewal''s outcome is appended at its local hour');
select sched.fold_hour_stats();
select is((select length(hours) || ':' || get_byte(hours, 13) || '/' || get_byte(hours, 37)
           from cp.subscriber_timing where subscriber_id = (select subscriber_id from t)), '48:1/1',
          'folded into 48 bytes: one attempt, one success at 13:00');
select is((select count(*) from cp.subscriber_hour_delta), 0::bigint, 'the delta is emptied');

-- Thin history: the carrier's hours decide.
insert into cp.hour_stats (carrier_id, local_hour, attempts, successes)
select (select carrier_id from t), h, 100, case h when 9 then 90 else 20 end from generate_series(0, 23) h
on conflict (carrier_id, local_hour) do update set attempts = excluded.attempts, successes = excluded.successes;
select is(cp.subscriber_slot((select subscriber_id from t), (select carrier_id from t),
                             array['2030-03-05 09:00', '2030-03-05 19:00']::timestamp[], false),
          '2030-03-05 09:00'::timestamp, 'no history at either hour: the carrier''s better hour');

-- Their own history outweighs the carrier's habit once it is long enough.
insert into cp.subscriber_hour_delta
select (select subscriber_id from t), h, h = 19 from generate_series(1, 8) i, (values (9), (19)) x (h);
select sched.fold_hour_stats();
select is(cp.subscriber_slot((select subscriber_id from t), (select carrier_id from t),
                             array['2030-03-05 09:00', '2030-03-05 19:00']::timestamp[], false),
          '2030-03-05 19:00'::timestamp, 'eight successes at 19:00 and eight failures at 09:00: their own hour');
select is(cp.subscriber_slot((select subscriber_id from t), (select carrier_id from t),
                             array['2030-03-05 09:00', '2030-03-05 12:00', '2030-03-05 19:00']::timestamp[], false,
                             cp.timing_retry_hours()),
          '2030-03-05 09:00'::timestamp, 'a retry takes the soonest of their two best hours (19:00, then 09:00)');
select ok(cp.timing_score(null, 19, 100, 20) < cp.timing_score(t.hours, 19, 100, 20)
          and cp.timing_score(t.hours, 19, 100, 20) < 1, 'the score moves from the prior towards their own rate')
from cp.subscriber_timing t where t.subscriber_id = (select subscriber_id from t);

-- Counts are halved past 60 attempts at an hour.
insert into cp.subscriber_hour_delta select (select subscriber_id from t), 19, true from generate_series(1, 60);
select sched.fold_hour_stats();
select is((select get_byte(hours, 19) || '/' || get_byte(hours, 43) from cp.subscriber_timing
           where subscriber_id = (select subscriber_id from t)), '34/34', '68 attempts at 19:00 become 34');

-- Exploration: a random allowed slot, counted; the share is bounded.
create temp table counted as select choices, explorations from report.subscriber_timing();
select ok(cp.subscriber_slot((select subscriber_id from t), (select carrier_id from t),
                             array['2030-03-05 09:00', '2030-03-05 10:00']::timestamp[], true)
          in ('2030-03-05 09:00', '2030-03-05 10:00'), 'an exploring choice stays among the allowed slots');
select is((select (r.explorations - c.explorations) || '/' || (r.choices - c.choices)
           from report.subscriber_timing() r, counted c), '1/1',
          'explorations and choices are counted');
select ok(cp.timing_exploration_share() between 0.01 and 0.1, 'at most a tenth of attempts explore');
select ok((select row_bytes <= 100 from report.subscriber_timing()), 'a subscriber''s state is one row of at most 100 bytes');

-- The first attempt of a period: the subscriber's best hour of its first day, inside the window.
select is(cp.first_attempt_time(0, '2030-03-05 12:00+00'), '2030-03-05 12:00+00'::timestamptz,
          'not subscriber-timed: the period''s start');
update cp.carrier set rules_override = '{"charging_hours": "08:00-18:00"}' where code = 'test_ng';
select ok((select bool_and(x.at >= '2030-03-05 05:30+00' and x.at < '2030-03-06 05:30+00'
                           and cp.in_window((x.at at time zone 'Africa/Lagos')::time, '08:00-18:00'))
           from (select cp.first_attempt_time((select subscription_id from t), '2030-03-05 05:30+00') as at
                 from generate_series(1, 50)) x),
          'the first attempt stays inside the charging window and its first day, explored or not');

-- Retries: inside the window, at least an hour away, on the next day once today's attempts are used.
update cp.subscription set attempts_day = (cp.clock_now() at time zone 'Africa/Lagos')::date, attempts_today = 3
where subscription_id = (select subscription_id from t);
select ok((select bool_and((n.retry_at at time zone 'Africa/Lagos')::date
                           > (cp.clock_now() at time zone 'Africa/Lagos')::date
                           and cp.in_window((n.retry_at at time zone 'Africa/Lagos')::time, '08:00-18:00'))
           from generate_series(1, 30) g, lateral cp.next_retry_times(array[(select subscription_id from t) + 0 * g]) n),
          'a retry with the day''s attempts used waits for the next day, inside the window');

select * from finish();
rollback;
