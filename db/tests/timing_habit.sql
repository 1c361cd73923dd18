-- The habit test of the subscriber timing: its exploring attempts and a sample of those at the
-- subscribers' best hours are kept until their outcome is folded, per carrier; a carrier whose best hours
-- do not beat chance by the lift is charged at the product's fixed hours (retries but for a small share
-- of explorations and probes, first attempts at the period's start), and gets no balance queries.
\set QUIET on
begin;
\ir fixtures/world.sql
\ir fixtures/timed_subscription.sql
select plan(23);

select pg_temp.timed_subscription('hclub', '+2348020000081');
update cp.carrier set rules_override = '{"charging_hours": "08:00-18:00"}' where code = 'test_ng';

-- The verdict, from counts (explored, explored_successes, chosen, chosen_successes).
create function pg_temp.verdict(p_explored int, p_explored_successes int, p_chosen int, p_chosen_successes int)
returns boolean language sql as $$
    insert into cp.timing_habit (carrier_id, explored, explored_successes, chosen, chosen_successes)
    values ((select carrier_id from t), p_explored, p_explored_successes, p_chosen, p_chosen_successes)
    on conflict (carrier_id) do update
        set explored = excluded.explored, explored_successes = excluded.explored_successes,
            chosen = excluded.chosen, chosen_successes = excluded.chosen_successes;
    select cp.timing_hours_habitual((select carrier_id from t));
$$;
select ok(cp.timing_hours_habitual((select carrier_id from t)), 'no evidence yet: habits are assumed');
select ok(pg_temp.verdict(50, 15, 50, 15), 'fewer sampled attempts than the minimum: habits still assumed');
select ok(not pg_temp.verdict(1000, 300, 1000, 300), 'best hours no better than chance: no habit');
select ok(not pg_temp.verdict(1000, 300, 1000, 360), 'best hours 1.2 times chance, clearly under 1.3: no habit');
select ok(pg_temp.verdict(1000, 300, 1000, 450), 'best hours 1.5 times chance: habits');
select ok(pg_temp.verdict(150, 45, 150, 55),
          'a thin sample a little under the lift is noise, not a finding: habits still assumed');
delete from cp.timing_habit;

-- Retries. The subscriber's history: ten attempts at every hour, successes only at 09:00 (their best
-- hour) and 10:00; no top-up rhythm. Now is 13:00 Lagos on 4 March, one attempt made today, stepped down.
update cp.subscriber_timing
set hours = decode(repeat('0a', 24) || repeat('00', 9) || '0807' || repeat('00', 13), 'hex'),
    last_topup_at = null, cycle_tenths = null, cycle_gaps = 0
where subscriber_id = (select subscriber_id from t);
insert into cp.subscriber_timing (subscriber_id, hours, cycle_gaps)
select subscriber_id, decode(repeat('0a', 24) || repeat('00', 9) || '0807' || repeat('00', 13), 'hex'), 0
from t where not exists (select 1 from cp.subscriber_timing x where x.subscriber_id = t.subscriber_id);
update cp.subscription set retry_level = 1, attempts_today = 1,
       attempts_day = (cp.clock_now() at time zone 'Africa/Lagos')::date
where subscription_id = (select subscription_id from t);
-- pg_temp.retried_at: of 40 retries placed now, how many fall at a local day and hour ('DD HH24:MI').
create function pg_temp.retried_at(p_hhmm text) returns bigint language sql as $$
    select count(*) from generate_series(1, 40) g, lateral cp.next_retry_times(array[(select subscription_id from t) + 0 * g]) n
    where to_char(n.retry_at at time zone 'Africa/Lagos', 'DD HH24:MI') = p_hhmm
$$;
select setseed(0.5);
select cmp_ok(pg_temp.retried_at('05 09:00'), '>=', 30::bigint, 'habits assumed: a retry waits for their best hour');
select pg_temp.verdict(1000, 300, 1000, 300);
select cmp_ok(pg_temp.retried_at('04 16:00'), '>=', 36::bigint,
              'no habit: a retry goes at the soonest fixed hour inside the window');
select ok((select bool_and(cp.in_window((n.retry_at at time zone 'Africa/Lagos')::time, '08:00-18:00'))
           from generate_series(1, 40) g, lateral cp.next_retry_times(array[(select subscription_id from t) + 0 * g]) n),
          'no habit: every retry inside the charging window, explorations and probes too');
create temp table choices0 as select choices, explorations from report.subscriber_timing();
select pg_temp.retried_at('04 16:00');
select is((select r.choices - c.choices from report.subscriber_timing() r, choices0 c), 40::bigint,
          'every placement counts among the timing''s choices, the fixed-hours ones too');
select cmp_ok((select r.explorations - c.explorations from report.subscriber_timing() r, choices0 c), '<=', 6::bigint,
              'no habit: exploration is a small share of the placements');

-- The verdict is the subscriber timing's: a best_hour product of the same carrier explores as before.
select admin.add_product('acme', 'bhclub', 'Best hour club', 'step_down', 'best_hour');
select admin.add_price_point('acme', 'bhclub', 'daily', 10000, 'NGN', 'bhclub_full', p_carrier => 'test_ng');
select api.subscribe('acme', '+2348020000082', 'bhclub', 'daily', 'bhclub-1');
select api.confirm_optin('acme', (select max(optin_id) from cp.optin), pg_temp.pin('+2348020000082'));
create temp table bh as
select s.subscription_id from cp.subscription s join cp.subscriber b using (subscriber_id)
where b.msisdn = '+2348020000082';
update cp.subscription set attempts_today = 1, attempts_day = (cp.clock_now() at time zone 'Africa/Lagos')::date
where subscription_id = (select subscription_id from bh);
delete from cp.hour_stats where carrier_id = (select carrier_id from t);
select setseed(0.5);
select ok((select 200 - max(c) from (select count(*) c
                                     from generate_series(1, 200) g,
                                          lateral cp.next_retry_times(array[(select subscription_id from bh) + 0 * g]) n
                                     group by n.retry_at) y) between 8 and 40,
          'no habit: a best_hour product still explores a tenth of its retries (the soonest slot otherwise)');

-- First attempts: at the period's start on a carrier without habits.
select ok((select bool_and(cp.first_attempt_time((select subscription_id from t), '2030-03-05 12:00+00')
                           = '2030-03-05 12:00+00') from generate_series(1, 30)),
          'no habit: a period''s first attempt is at its start, as with fixed hours');
delete from cp.timing_habit;
select cmp_ok((select count(*) from generate_series(1, 30) g
               where to_char(cp.first_attempt_time((select subscription_id from t), '2030-03-05 12:00+00')
                             at time zone 'Africa/Lagos', 'DD HH24:MI') = '06 09:00'), '>=', 20::bigint,
              'habits assumed: a period''s first attempt goes at their best hour');

-- Balance queries (where the carrier's terms would make them worth it) only where habits hold: at
-- 13:00 their history expects little of a charge.
update cp.subscription set retry_level = 0, collected_in_period = 0, balance_checked_at = null
where subscription_id = (select subscription_id from t);
select is(cp.renewals_to_query(array[(select subscription_id from t)]), array[(select subscription_id from t)],
          'habits assumed: a renewal likely to fail is queried first');
select pg_temp.verdict(1000, 300, 1000, 300);
select is(cp.renewals_to_query(array[(select subscription_id from t)]), '{}'::bigint[],
          'no habit: no query, the history says nothing of the hour');
delete from cp.timing_habit;

-- What is kept for the test: every exploring choice of a subscriber with a history of three successes or
-- more, and its outcome folded when a renewal of theirs settles in the slot's hour or the next.
select cp.subscriber_slot((select subscriber_id from t), (select carrier_id from t),
                          array['2030-03-04 15:00'::timestamp], true);
select is((select local_slot::text || ' ' || explored from cp.timing_probe where subscriber_id = (select subscriber_id from t)),
          '2030-03-04 15:00:00 true', 'an exploring choice is kept with its slot');
insert into cp.subscriber_hour_delta (subscriber_id, local_hour, success, settled_at)
select subscriber_id, 15, true, '2030-03-04 14:10+00' from t;
select sched.fold_hour_stats();
select is((select explored || '/' || explored_successes || ' ' || chosen || '/' || chosen_successes
           from cp.timing_habit where carrier_id = (select carrier_id from t)),
          '1/1 0/0', 'its outcome, settled in the slot''s hour, counts for the carrier');
select ok(not exists (select 1 from cp.timing_probe where subscriber_id = (select subscriber_id from t)),
          'and the kept choice is gone once counted');
select cp.subscriber_slot((select subscriber_id from t), (select carrier_id from t),
                          array['2030-03-04 15:00'::timestamp], true);
insert into cp.subscriber_hour_delta (subscriber_id, local_hour, success, settled_at)
select subscriber_id, 19, false, '2030-03-04 18:10+00' from t;
select sched.fold_hour_stats();
select is((select explored from cp.timing_habit where carrier_id = (select carrier_id from t)), 1,
          'an outcome settled hours after the slot is another attempt''s: not counted');

-- On a carrier found without habits every choice at the best hours is kept (they are the probes).
update cp.timing_habit set explored = 1000, explored_successes = 300, chosen = 1000, chosen_successes = 300;
select cp.subscriber_slot((select subscriber_id from t), (select carrier_id from t),
                          array['2030-03-04 15:00'::timestamp, '2030-03-05 09:00'::timestamp], false,
                          p_probe => not cp.timing_hours_habitual((select carrier_id from t)));
select is((select local_slot::text || ' ' || explored from cp.timing_probe where subscriber_id = (select subscriber_id from t)),
          '2030-03-05 09:00:00 false', 'no habit: a choice at their best hour is kept as a probe');

-- Evidence fades: past the memory, the counts are halved.
update cp.timing_habit set explored = cp.timing_habit_memory(), explored_successes = 600,
                           chosen = 1000, chosen_successes = 300;
select cp.subscriber_slot((select subscriber_id from t), (select carrier_id from t),
                          array['2030-03-04 15:00'::timestamp], true);
insert into cp.subscriber_hour_delta (subscriber_id, local_hour, success, settled_at)
select subscriber_id, 15, true, '2030-03-04 14:30+00' from t;
select sched.fold_hour_stats();
select is((select explored || '/' || explored_successes || ' ' || chosen || '/' || chosen_successes
           from cp.timing_habit where carrier_id = (select carrier_id from t)),
          (cp.timing_habit_memory() + 1) / 2 || '/300 500/150', 'past the memory the counts are halved');

-- A subscriber with two successes seen: their best hours are still mostly the carrier's, nothing kept.
update cp.subscriber_timing set hours = decode(repeat('0a', 24) || repeat('00', 9) || '02' || repeat('00', 14), 'hex')
where subscriber_id = (select subscriber_id from t);
select cp.subscriber_slot((select subscriber_id from t), (select carrier_id from t),
                          array['2030-03-04 15:00'::timestamp], true);
select ok(not exists (select 1 from cp.timing_probe where subscriber_id = (select subscriber_id from t)),
          'a history of two successes: the choice is not kept for the test');

select * from finish();
rollback;
