-- Answers recorded once per call and lease (an adapter that lost its connection sends its last
-- group again), and the operator's path for calls no reconciliation route could settle.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(40);

-- What an adapter sends for one answer: the call, the lease it was claimed under, the outcome.
create function pg_temp.answer(p_call_id bigint, p_lease integer, p_outcome text, p_reason text default null)
returns jsonb
language sql as $$
    select jsonb_strip_nulls(jsonb_build_object('call_id', p_call_id, 'lease', p_lease, 'outcome', p_outcome,
                                                'reason', p_reason, 'carrier_ref', 'TX-' || p_call_id))
$$;
create function pg_temp.call_of(p_procedure_id bigint) returns bigint
language sql as $$ select max(call_id) from cp.carrier_call where procedure_id = p_procedure_id $$;
create function pg_temp.logged(p_call_id bigint) returns integer
language sql as $$ select count(*)::int from cp.carrier_log where call_id = p_call_id $$;

-- A plain charge answer (settled with the batch's others) recorded, then sent again.
create temp table pay as select (api.charge('acme', '+2348020000001', 'gems', 'a1')->>'id')::bigint as id;
create temp table claimed as select * from pg_temp.claim('test_ng') d;
select is((select (c.d->>'lease')::int from claimed c where c.d->>'operation' = 'charge'), 1,
          'a claim names the lease it hands out');
create temp table ok as select pg_temp.answer(pg_temp.call_of((select id from pay)), 1, 'succeeded') as r;
select is(adapter.complete_calls(jsonb_build_array((select r from ok))), '{"applied": 1}'::jsonb, 'recorded');
select is(adapter.complete_calls(jsonb_build_array((select r from ok))), '{"duplicate": 1}'::jsonb,
          'the same answer again is a repeat');
select is((select count(*)::int from cp.journal where procedure_id = (select id from pay)), 1, 'one journal');
select is(pg_temp.logged(pg_temp.call_of((select id from pay))), 1, 'logged once');
select is((select answered_lease_no from cp.carrier_call where call_id = pg_temp.call_of((select id from pay))), 1,
          'the call remembers the lease it was answered under');

-- A refund answer (applied one by one) recorded twice, the second time within one batch.
create temp table r1 as select (api.refund('acme', (select id from pay), 'r1', 5000)->>'id')::bigint as id;
select pg_temp.claim('test_ng');
create temp table rok as select pg_temp.answer(pg_temp.call_of((select id from r1)), 1, 'succeeded') as r;
select is(adapter.complete_calls(jsonb_build_array((select r from rok), (select r from rok))),
          '{"applied": 1, "duplicate": 1}'::jsonb, 'the same answer twice in one batch: recorded once');
select is(adapter.complete_calls(jsonb_build_array((select r from rok))), '{"duplicate": 1}'::jsonb,
          'and again in a later batch: a repeat');
select is((select refunded_minor from cp.procedure where procedure_id = (select id from pay)), 5000::bigint,
          'refunded once');
select is((select count(*)::int from cp.journal where procedure_id = (select id from r1)), 1, 'one refund journal');
select is(pg_temp.logged(pg_temp.call_of((select id from r1))), 1, 'logged once');

-- A throttled answer puts the call back on the queue; sent again, it must not take it off.
create temp table thr as select (api.charge('acme', '+2348020000002', 'gems', 'a2')->>'id')::bigint as id;
select pg_temp.claim('test_ng');
create temp table t1 as select pg_temp.answer(pg_temp.call_of((select id from thr)), 1, 'failed', 'throttled') as r;
select is(adapter.complete_calls(jsonb_build_array((select r from t1))), '{"applied": 1}'::jsonb, 'throttled');
select is(adapter.complete_calls(jsonb_build_array((select r from t1))), '{"duplicate": 1}'::jsonb,
          'the throttled answer again is a repeat');
select is((select count(*)::int from cp.call_queue where call_id = pg_temp.call_of((select id from thr))
           and lease_until is null), 1, 'the call is still on the queue, not leased');
select admin.advance_clock(interval '10 seconds');
create temp table claimed2 as select * from pg_temp.claim('test_ng') d;
select is((select (c.d->>'lease')::int from claimed2 c where c.d->>'operation' = 'charge'), 2,
          'claimed again: the second lease');
select is(adapter.complete_calls(jsonb_build_array((select r from t1))), '{"duplicate": 1}'::jsonb,
          'the first lease''s throttled answer, sent once more, changes nothing');
select is((select status::text from cp.carrier_call where call_id = pg_temp.call_of((select id from thr))), 'leased',
          'the call stays with its second lease');
select is(adapter.complete_calls(jsonb_build_array(pg_temp.answer(pg_temp.call_of((select id from thr)), 2,
                                                                  'succeeded'))),
          '{"applied": 1}'::jsonb, 'the second lease''s answer is recorded');
select is((select status::text || ' ' || collected_minor from cp.procedure where procedure_id = (select id from thr)),
          'succeeded 20000', 'charged once');

-- A lease that ran out (the adapter stalled) and a call handed out again: the first lease's late
-- "nothing happened" must not open a new attempt while the second is with the carrier.
create temp table bal as select (api.check_balance('acme', '+2348020000003', 100, 'bal-1')->>'id')::bigint as id;
select pg_temp.claim('test_ng');
select admin.advance_clock(interval '2 minutes');
select adapter.expire_leases();
select pg_temp.claim('test_ng');
select is((select lease_no from cp.carrier_call where call_id = pg_temp.call_of((select id from bal))), 2,
          'the balance call was requeued and leased again');
select is(adapter.complete_calls(jsonb_build_array(pg_temp.answer(pg_temp.call_of((select id from bal)), 1,
                                                                  'failed', 'transient'))),
          '{"duplicate": 1}'::jsonb, 'a transient failure from the outlived lease is left out');
select is((select count(*)::int from cp.carrier_call where procedure_id = (select id from bal)), 1,
          'no new attempt was opened');
select is(adapter.complete_calls(jsonb_build_array(pg_temp.answer(pg_temp.call_of((select id from bal)), 1,
                                                                  'succeeded') || '{"balance_minor": 700}')),
          '{"applied": 1}'::jsonb, 'a definite late answer from it is taken');
select is((select status::text from cp.procedure where procedure_id = (select id from bal)), 'succeeded',
          'the balance check succeeded');

-- Without a lease number (an old adapter), a late "throttled" for a call already back on the queue
-- leaves it there.
create temp table bal2 as select (api.check_balance('acme', '+2348020000004', 100, 'bal-2')->>'id')::bigint as id;
select pg_temp.claim('test_ng');
select admin.advance_clock(interval '2 minutes');
select adapter.expire_leases();
select is(pg_temp.settle((select id from bal2), 'failed', 'throttled'), '{"duplicate": 1}'::jsonb,
          'a late throttled answer for a requeued call changes nothing');
select is((select count(*)::int from cp.call_queue where call_id = pg_temp.call_of((select id from bal2))), 1,
          'the call is still on the queue');

-- A refund whose answer was lost on a carrier that offers no route to settle it (not deduplicated,
-- no status query or result file that knows refunds): after three reconciliation turns it is
-- listed for an operator.
create temp table r2 as select (api.refund('acme', (select id from pay), 'r2', 5000)->>'id')::bigint as id;
select pg_temp.claim('test_ng');
select admin.advance_clock(interval '2 minutes');
select adapter.expire_leases();
select is((select status::text from cp.procedure where procedure_id = (select id from r2)), 'unknown',
          'the refund is unknown');
create function pg_temp.turn() returns integer
language plpgsql as $$
begin
    perform admin.advance_clock(interval '1 day');
    update cp.carrier_call set sent_at = sent_at - interval '1 hour' where status = 'unknown';
    return (select count(*)::int from adapter.claim_reconciliations('test_ng', 100));
end
$$;
select is(pg_temp.turn() + pg_temp.turn(), 2, 'two reconciliation turns');
select is((select count(*)::int from report.calls_needing_operator), 0, 'not yet listed for an operator');
select is(pg_temp.turn(), 1, 'a third turn');
select is((select carrier || ' ' || operation || ' ' || status || ' ' || procedure_status || ' ' || amount_minor
           from report.calls_needing_operator where procedure_id = (select id from r2)),
          'test_ng refund unknown unknown 5000', 'listed for an operator, with what is at stake');

-- The operator settles it: the same completion path, the reason kept.
select throws_ok($$ select admin.settle_call(999999, 'succeeded', 'asked the carrier') $$, 'CP072', null,
                 'an unknown call');
select throws_ok(format($$ select admin.settle_call(%s, 'maybe', 'asked the carrier') $$,
                        pg_temp.call_of((select id from r2))), 'CP080', null, 'an outcome other than succeeded/failed');
select throws_ok(format($$ select admin.settle_call(%s, 'succeeded', '  ') $$,
                        pg_temp.call_of((select id from r2))), 'CP080', null, 'no reason');
select throws_ok(format($$ select admin.settle_call(%s, 'failed', 'asked the carrier') $$,
                        pg_temp.call_of((select id from pay))), 'CP091', null, 'a call whose outcome is known');
select is(admin.settle_call(pg_temp.call_of((select id from r2)), 'succeeded', 'carrier portal: refund RF-1 done')
              - 'call_id' - 'procedure_id',
          '{"status": "done", "procedure_status": "succeeded"}'::jsonb, 'settled by the operator');
select is((select status::text || ' ' || refunded_minor from cp.procedure where procedure_id = (select id from pay)),
          'partially_refunded 10000', 'the payment shows both refunds');
select is((select count(*)::int from cp.journal where procedure_id = (select id from r2)), 1,
          'the refund journal is posted');
select is((select payload->>'reason' || ' / ' || (payload->>'outcome') || ' / ' || (payload->>'operator')
           from cp.event where kind = 'settled_by_operator'),
          'carrier portal: refund RF-1 done / succeeded / ' || session_user, 'who settled it, how and why');
select is((select count(*)::int from report.calls_needing_operator), 0, 'no longer listed');

select * from finish();
rollback;
