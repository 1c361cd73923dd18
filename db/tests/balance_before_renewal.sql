-- A balance query before a renewal the subscriber timing says will likely fail, where the carrier's
-- terms make a failed charge cost more than a query: queried instead of charged, no attempt counted;
-- short of every price: the next retry time without a step-down; covering a lower step: stepped down
-- and charged now; sufficient or no answer: charged without another query; never where the
-- subscriber's hour is good or a query costs as much as a failure.
\set QUIET on
begin;
\ir fixtures/world.sql
\ir fixtures/timed_subscription.sql
select plan(31);

select pg_temp.timed_subscription('qclub', '+2348020000090', p_step_down => true);
select pg_temp.collect_activation();
-- The carrier's hours say a charge at any hour will likely fail (6%).
insert into cp.hour_stats (carrier_id, local_hour, attempts, successes)
select (select carrier_id from t), h, 100, 5 from generate_series(0, 23) h
on conflict (carrier_id, local_hour) do update set attempts = excluded.attempts, successes = excluded.successes;

create function pg_temp.sub() returns cp.subscription language sql as
$$ select * from cp.subscription where subscription_id = (select subscription_id from t) $$;
create function pg_temp.latest(p_kind text) returns cp.procedure language sql as
$$ select * from cp.procedure where subscription_id = (select subscription_id from t) and kind = p_kind::cp.procedure_kind
   order by procedure_id desc limit 1 $$;

-- Without call costs in the carrier's terms the renewal is charged.
select ok(not cp.balance_before_renewal((select carrier_id from t)), 'no call costs: no query first');
select admin.set_clock((pg_temp.sub()).next_charge_at + interval '1 minute');
select is(sched.run_due(100), 1, 'the due renewal is queued');
select is((pg_temp.latest('charge')).period_index, 1, 'as a charge of period 1');
select pg_temp.claim('test_ng');
select pg_temp.settle((pg_temp.latest('charge')).procedure_id, 'succeeded');

-- A failed charge costs the operator five times a query.
update cp.carrier set spec = jsonb_set(spec, '{terms,call_costs}', '{"charge_failed": 5, "balance": 1}')
where carrier_id = (select carrier_id from t);
select ok(cp.balance_before_renewal((select carrier_id from t)), 'a failed charge costs more: query first');
select admin.set_clock((pg_temp.sub()).next_charge_at + interval '1 minute');
create temp table attempts_before as select attempts_day, attempts_today from pg_temp.sub();
select is(sched.run_due(100), 1, 'the due renewal is queued');
select is((select kind::text || ' ' || period_index || ' ' || amount_minor from pg_temp.latest('balance_check')),
          'balance_check 2 10000', 'as a balance query of period 2 for the full price');
select is((select count(*)::int from cp.procedure where subscription_id = (select subscription_id from t)
                  and kind = 'charge' and period_index = 2), 0, 'and no charge');
select ok((select s.next_charge_at is null and s.attempts_day = b.attempts_day and s.attempts_today = b.attempts_today
           from pg_temp.sub() s, attempts_before b), 'not due while the query is out; no charge attempt counted');
select is(sched.run_due(100), 0, 'a second scheduler pass queues nothing more');

-- Short: the next retry time, no step-down, nothing charged.
select pg_temp.claim('test_ng');
select pg_temp.settle((pg_temp.latest('balance_check')).procedure_id, 'succeeded', null, '{"balance_minor": 3000}');
select is((select result->>'sufficient' from pg_temp.latest('balance_check')), 'false', 'the query found 3,000 of 10,000');
select ok((select next_charge_at > cp.clock_now() and retry_level = 0 and balance_checked_at is null from pg_temp.sub()),
          'short: due at its next retry time, at the same price');
select is((select count(*)::int from cp.procedure where subscription_id = (select subscription_id from t)
                  and kind = 'charge' and period_index = 2), 0, 'still no charge');
select ok((select next_charge_at >= cp.clock_now() + interval '1 hour'
                  and next_charge_at <= cp.clock_now() + interval '2 days' from pg_temp.sub()),
          'the retry is the timing''s next slot: at least an hour away, within the coming day''s slots');
create temp table before_replay as select next_charge_at, retry_level from pg_temp.sub();
select cp.renewal_balance_answered(pg_temp.latest('balance_check'), 12000);
select ok((select s.next_charge_at = b.next_charge_at and s.retry_level = b.retry_level
           from pg_temp.sub() s, before_replay b), 'a late or repeated answer changes nothing once the renewal has moved on');

-- Sufficient: due now, and charged without another query.
select admin.set_clock((pg_temp.sub()).next_charge_at + interval '1 minute');
select is(sched.run_due(100), 1, 'due again: queried again');
select pg_temp.claim('test_ng');
select pg_temp.settle((pg_temp.latest('balance_check')).procedure_id, 'succeeded', null, '{"balance_minor": 12000}');
select ok((select next_charge_at = cp.clock_now() and balance_checked_at = cp.clock_now() from pg_temp.sub()),
          'sufficient: due now');
select is(sched.run_due(100), 1, 'and queued');
select is((select kind::text || ' ' || period_index || ' ' || amount_minor from pg_temp.latest('charge')),
          'charge 2 10000', 'as the full-price charge, not another query');
select pg_temp.claim('test_ng');
select pg_temp.settle((pg_temp.latest('charge')).procedure_id, 'succeeded');

-- A query without a definite answer: the renewal is charged as it would have been.
select admin.set_clock((pg_temp.sub()).next_charge_at + interval '1 minute');
select is((select balance_checked_at from pg_temp.sub()), null, 'the charge clears the answer it went on');
select is(sched.run_due(100), 1, 'period 3 is queried');
select pg_temp.claim('test_ng');
select pg_temp.settle((pg_temp.latest('balance_check')).procedure_id, 'failed', 'transient');
select is(sched.run_due(100), 1, 'the failed query does not hold the renewal back');
select is((select kind::text || ' ' || period_index from pg_temp.latest('charge')), 'charge 3', 'it is charged');
select pg_temp.claim('test_ng');
select pg_temp.settle((pg_temp.latest('charge')).procedure_id, 'succeeded');

-- Short of the full price but covering the stepped-down one: stepped down now, without a failed charge.
select admin.set_clock((pg_temp.sub()).next_charge_at + interval '1 minute');
select is(sched.run_due(100), 1, 'period 4 is queried');
select pg_temp.claim('test_ng');
select pg_temp.settle((pg_temp.latest('balance_check')).procedure_id, 'succeeded', null, '{"balance_minor": 6000}');
select ok((select retry_level = 1 and next_charge_at = cp.clock_now() from pg_temp.sub()),
          '6,000 covers the 5,000 step: stepped down and due now');
select is(sched.run_due(100), 1, 'and queued');
select is((select kind::text || ' ' || period_index || ' ' || amount_minor || ' ' || status from pg_temp.latest('charge')),
          'charge 4 5000 pending', 'as the stepped-down charge, with no failed charge before it');
select pg_temp.claim('test_ng');
select pg_temp.settle((pg_temp.latest('charge')).procedure_id, 'succeeded');

-- Where the subscriber's own history says this hour pays, no query.
insert into cp.subscriber_hour_delta (subscriber_id, local_hour, success, settled_at)
select (select subscriber_id from t), extract(hour from (pg_temp.sub()).next_charge_at at time zone 'Africa/Lagos')::int,
       true, cp.clock_now()
from generate_series(1, 12);
select sched.fold_hour_stats();
select admin.set_clock((pg_temp.sub()).next_charge_at + interval '1 minute');
select is(sched.run_due(100), 1, 'period 5 is queued');
select is((select kind::text || ' ' || period_index from pg_temp.latest('charge')), 'charge 5',
          'as a charge: twelve successes at this hour outweigh the carrier''s habit');

-- A query that costs as much as a failed charge is not worth making; bad costs are refused.
update cp.carrier set spec = jsonb_set(spec, '{terms,call_costs}', '{"charge_failed": 1, "balance": 1}')
where carrier_id = (select carrier_id from t);
select ok(not cp.balance_before_renewal((select carrier_id from t)), 'equal costs: no query first');
select throws_ok($$select admin.onboard_carrier((select spec from cp.carrier where code = 'test_ng')
                                                 || '{"terms": {"carrier_share_bp": 4000, "call_costs": {"charge_failed": -1, "balance": 1}}}')$$,
                 'CP090', 'carrier spec: terms.call_costs must be {charge_failed, balance}, each a whole number of one unit (0 to 15 digits)',
                 'a negative cost is refused');
select throws_ok($$select admin.onboard_carrier((select spec from cp.carrier where code = 'test_ng')
                                                 || '{"terms": {"carrier_share_bp": 4000, "call_costs": {"charge_failed": 5, "balance": 1, "sms": 1}}}')$$,
                 'CP090', null, 'an unknown cost is refused');

select * from finish();
rollback;
