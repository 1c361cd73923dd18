-- The adapters' side: leases that expire, unknown outcomes reconciled (never blindly repeated),
-- callbacks that arrive early or twice, throttling, transient retries, carriers that cannot be reached.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(50);

-- A charge whose lease runs out may have reached the carrier: it becomes unknown, never requeued.
create temp table pay as select (api.charge('acme', '+2348020000001', 'gems', 'c1')->>'id')::bigint as id;
create temp table bal as select (api.check_balance('acme', '+2348020000002', 100, 'bal-1')->>'id')::bigint as id;
select is((select count(*)::int from pg_temp.claim('test_ng')), 2, 'charge and balance calls leased');
select is(adapter.expire_leases(), '{"unknown": 0, "requeued": 0}'::jsonb, 'nothing expires inside the lease');
select admin.advance_clock(interval '2 minutes');
select is(adapter.expire_leases(), '{"unknown": 1, "requeued": 1}'::jsonb,
          'after the lease: the charge goes unknown, the balance call is requeued');
select is((select status::text from cp.procedure where procedure_id = (select id from pay)), 'unknown',
          'the charge procedure is unknown');
select is((select status::text || ' ' || reason from cp.carrier_call where procedure_id = (select id from pay)),
          'unknown lease_expired', 'its call is unknown (lease expired)');
select is((select count(*)::int from cp.call_queue q join cp.carrier_call c using (call_id)
           where c.procedure_id = (select id from pay)), 0, 'and is not in the work queue');
select is((select status::text from cp.carrier_call where procedure_id = (select id from bal)), 'queued',
          'the balance call is queued again');
select is((select correlator from cp.carrier_call where procedure_id = (select id from bal)), (select 'cp-' || call_id
           from cp.carrier_call where procedure_id = (select id from bal)), 'with the same correlator');
select is((select count(*)::int from pg_temp.claim('test_ng')), 1, 'a claim gets the balance call only');
select is(adapter.expire_leases(), '{"unknown": 0, "requeued": 0}'::jsonb, 'expiry is not applied twice');

-- Reconciliation: after 5 minutes the unknown call is handed to the reconciler, on a back-off.
select is((select count(*)::int from adapter.claim_reconciliations('test_ng', 10)), 0, 'not yet due');
select admin.advance_clock(interval '5 minutes');
select is((select count(*)::int from adapter.claim_reconciliations('test_ng', 10)), 0,
          'due on the business clock, but sent moments ago in real time: the carrier may still be at it');
-- Twice the carrier's timeout (30 s by default) has passed in real time.
update cp.carrier_call set sent_at = sent_at - interval '61 seconds' where procedure_id = (select id from pay);
select is((select d->>'correlator' from adapter.claim_reconciliations('test_ng', 10) d),
          (select correlator from cp.carrier_call where procedure_id = (select id from pay)),
          'due: the reconciler gets the call, with its original correlator to ask about');
select is((select count(*)::int from adapter.claim_reconciliations('test_ng', 10)), 0,
          'claimed once: pushed out on the back-off');
select is((select next_reconcile_at - cp.clock_now() from cp.carrier_call where procedure_id = (select id from pay)),
          interval '1 hour', 'next try in an hour');
-- The status query says it did go through.
select is(pg_temp.settle((select id from pay), 'succeeded'), '{"applied": 1}'::jsonb, 'the reconciled outcome applies');
select is((select status::text || ' ' || collected_minor from cp.procedure where procedure_id = (select id from pay)),
          'succeeded 20000', 'unknown -> succeeded: collected once');
select is((select count(*)::int from cp.carrier_call where procedure_id = (select id from pay)), 1,
          'no second charge call was ever made');
select is((select count(*)::int from cp.journal where procedure_id = (select id from pay)), 1, 'one journal');

-- A callback that arrives before the synchronous answer, then the answer, then the callback again.
create temp table pay2 as select (api.charge('acme', '+2348020000003', 'gems', 'c2')->>'id')::bigint as id;
select pg_temp.claim('test_ng');
create temp table cb as select jsonb_build_object(
    'correlator', (select correlator from cp.carrier_call where procedure_id = (select id from pay2)),
    'outcome', 'succeeded', 'carrier_ref', 'NG-77', 'dedupe_key', 'ng-cb-77') as payload;
select is((adapter.record_callback('test_ng', (select payload from cb)))->>'status', 'applied',
          'the early callback settles the call');
select is(adapter.complete_calls(jsonb_build_array(jsonb_build_object(
              'call_id', (select call_id from cp.carrier_call where procedure_id = (select id from pay2)),
              'outcome', 'succeeded'))), '{"duplicate": 1}'::jsonb,
          'the synchronous answer for that call is a duplicate');
select is((adapter.record_callback('test_ng', (select payload from cb)))->>'status', 'duplicate',
          'the same callback again is a duplicate (inbox key)');
select is((adapter.record_callback('test_ng', (select payload from cb) - 'dedupe_key' || '{"retry": 2}'))->>'status',
          'duplicate', 'a resent callback under another key is a duplicate too');
select is((select count(*)::int from cp.journal where procedure_id = (select id from pay2)), 1,
          'one journal, whatever the number of answers');
select is((select count(*)::int from cp.entitlement where procedure_id = (select id from pay2)), 1, 'one delivery');
select is((adapter.record_callback('test_ng', jsonb_build_object(
              'correlator', (select correlator from cp.carrier_call where procedure_id = (select id from pay2)),
              'outcome', 'failed', 'reason', 'insufficient_funds')))->>'status', 'conflict',
          'a contradicting late callback is recorded as a conflict');
select is((select status::text from cp.procedure where procedure_id = (select id from pay2)), 'succeeded',
          'and changes nothing');
select is((adapter.record_callback('test_ng', '{"correlator": "nobody", "outcome": "succeeded"}'))->>'status',
          'unmatched', 'a callback for no known call is kept unmatched');

-- Throttled: the same call goes back to the queue (same correlator); transient: a new attempt.
create temp table pay3 as select (api.charge('acme', '+2348020000004', 'gems', 'c3')->>'id')::bigint as id;
select pg_temp.claim('test_ng');
select pg_temp.settle((select id from pay3), 'failed', 'throttled');
select is((select string_agg(status::text || ' ' || attempt, ',') from cp.carrier_call
           where procedure_id = (select id from pay3)), 'queued 1', 'throttled: the same call is queued again');
select admin.advance_clock(interval '10 seconds');
select pg_temp.claim('test_ng');
select pg_temp.settle((select id from pay3), 'failed', 'transient');
select is((select string_agg(status::text || ' ' || attempt || ' ' || correlator, ',' order by call_id)
           from cp.carrier_call where procedure_id = (select id from pay3)),
          (select string_agg(s, ',') from (select min(call_id) c from cp.carrier_call
               where procedure_id = (select id from pay3)) m,
           lateral (values ('failed 1 cp-' || m.c), ('queued 2 cp-' || (select max(call_id) from cp.carrier_call
               where procedure_id = (select id from pay3)))) v(s)),
          'transient failure: a new attempt with a new correlator');
select is((select status::text from cp.procedure where procedure_id = (select id from pay3)), 'in_flight',
          'the procedure stays in flight between attempts');

-- Unreachable (nothing was sent): the same call is held on the queue on a growing back-off, using
-- up no attempt, and fails only after an hour of trying.
create temp table pay4 as select (api.charge('acme', '+2348020000006', 'gems', 'c4')->>'id')::bigint as id;
create temp view pay4_call as
    select c.status::text as status, c.attempt, c.correlator, c.unreachable_since, q.available_at - cp.clock_now() as wait
    from cp.carrier_call c left join cp.call_queue q using (call_id) where c.procedure_id = (select id from pay4);
create temp table pay4_first as select * from pay4_call;
create temp table pay4_start as select cp.clock_now() as at;
select pg_temp.claim('test_ng');
select is(pg_temp.settle((select id from pay4), 'failed', 'unreachable'), '{"applied": 1}'::jsonb,
          'an unreachable outcome applies');
select is((select status || ' ' || attempt || ' ' || wait from pay4_call), 'queued 1 00:00:05',
          'unreachable: the same call is held, tried again in 5 seconds');
select is((select correlator from pay4_call), (select correlator from pay4_first), 'with the same correlator');
select is((select status::text from cp.procedure where procedure_id = (select id from pay4)), 'in_flight',
          'the payment stays in flight');
select is((select count(*)::int from pg_temp.claim('test_ng')), 0, 'not handed out again before its time');
select admin.advance_clock(interval '5 seconds');
select is((select count(*)::int from pg_temp.claim('test_ng')), 1, 'handed out again after 5 seconds');
select pg_temp.settle((select id from pay4), 'failed', 'unreachable');
select is((select wait from pay4_call), interval '5 seconds', 'held 5 s so far: next in 5 s');
select admin.advance_clock(interval '5 seconds');
select pg_temp.claim('test_ng');
select pg_temp.settle((select id from pay4), 'failed', 'unreachable');
select is((select wait from pay4_call), interval '10 seconds', 'held 10 s so far: next in 10 s (the wait doubles)');
select admin.advance_clock(interval '30 minutes');
select pg_temp.claim('test_ng');
select pg_temp.settle((select id from pay4), 'failed', 'unreachable');
select is((select wait || ' ' || attempt from pay4_call), '00:02:00 1',
          'held half an hour: tried every 2 minutes, still the first attempt');
select is((select unreachable_since from pay4_call), (select at from pay4_start), 'held since the first refusal');
select admin.advance_clock(interval '30 minutes');
select pg_temp.claim('test_ng');
select pg_temp.settle((select id from pay4), 'failed', 'unreachable');
select is((select string_agg(status, ',') from pay4_call), 'failed',
          'held an hour: the call fails, and no new attempt is made');
select is((select status::text || ' ' || reason from cp.procedure where procedure_id = (select id from pay4)),
          'failed unreachable', 'the payment fails as unreachable');

-- A carrier back within the hour: the held call goes through, charged once.
create temp table pay5 as select (api.charge('acme', '+2348020000007', 'gems', 'c5')->>'id')::bigint as id;
select pg_temp.claim('test_ng');
select pg_temp.settle((select id from pay5), 'failed', 'unreachable');
select admin.advance_clock(interval '5 seconds');
select pg_temp.claim('test_ng');
select pg_temp.settle((select id from pay5), 'succeeded');
select is((select p.status::text || ' ' || p.collected_minor || ' ' || count(c.*) || ' ' ||
                  (select count(*) from cp.journal j where j.procedure_id = p.procedure_id)
           from cp.procedure p join cp.carrier_call c using (procedure_id)
           where p.procedure_id = (select id from pay5) group by p.procedure_id),
          'succeeded 20000 1 1', 'one call, collected once, one journal');

-- The lease ran out while the call was being tried, so it was taken for unknown; the adapter's late
-- answer says it never left. An unknown payment only ever becomes succeeded or failed: it fails as
-- unreachable (nothing was charged), and no new call is made.
create temp table pay6 as select (api.charge('acme', '+2348020000008', 'gems', 'c6')->>'id')::bigint as id;
select pg_temp.claim('test_ng');
select admin.advance_clock(interval '2 minutes');
select adapter.expire_leases();
select pg_temp.settle((select id from pay6), 'failed', 'unreachable');
select is((select status::text || ' ' || reason from cp.procedure where procedure_id = (select id from pay6)),
          'failed unreachable', 'a late unreachable answer for an expired lease fails the payment');
select is((select string_agg(status::text || ' ' || attempt, ',') from cp.carrier_call
           where procedure_id = (select id from pay6)), 'failed 1', 'with its one call, and nothing new queued');

-- An SMS that failed before reaching the carrier gets a new attempt, not dropped.
create temp table sms1 as select cp.queue_sms((select subscriber_id from cp.subscriber limit 1), 'hello',
                                              'reply') as id;
select pg_temp.claim('test_ng');
select pg_temp.settle((select id from sms1), 'failed', 'transient');
select is((select string_agg(status::text || ' ' || attempt, ',' order by call_id) from cp.carrier_call
           where procedure_id = (select id from sms1)), 'failed 1,queued 2', 'transient SMS failure: a new attempt');
select is((select status::text from cp.procedure where procedure_id = (select id from sms1)), 'in_flight',
          'the SMS procedure stays in flight between attempts');

-- A balance check reported unknown is settled by its later answer like any procedure.
create temp table bal2 as select (api.check_balance('acme', '+2348020000005', 100, 'bal-2')->>'id')::bigint as id;
select pg_temp.claim('test_ng');
select pg_temp.settle((select id from bal2), 'unknown', 'timeout');
select pg_temp.settle((select id from bal2), 'succeeded', null, '{"balance_minor": 500}');
select is((select status::text || ' ' || (result->>'balance_minor') from cp.procedure
           where procedure_id = (select id from bal2)), 'succeeded 500', 'unknown balance check -> succeeded');

-- Outcomes must be one of the known words.
select throws_ok(format($$ select adapter.complete_calls('[{"call_id": %s, "outcome": "maybe"}]') $$,
                        (select min(call_id) from cp.carrier_call)), 'CP080', null,
                 'an unknown outcome word is refused');

select * from finish();
rollback;
