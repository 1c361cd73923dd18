-- Carrier callbacks at the database's edge: only a call handed to the carrier can be settled by one,
-- a callback that contradicts what we hold moves no money and is kept for a person, a payload the
-- ledger cannot take is refused whole, and no carrier is onboarded whose callbacks prove nothing.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(27);

create temp view ledger as select coalesce(sum(abs(amount_minor)), 0)::bigint as total from cp.ledger_entry;
create temp table pay as select (api.charge('acme', '+2348020000101', 'gems', 'cb1')->>'id')::bigint as id;
create temp table cor as select correlator as c from cp.carrier_call where procedure_id = (select id from pay);

-- Never sent: the call is still in the queue.
select is((adapter.record_callback('test_ng', jsonb_build_object(
              'correlator', (select c from cor), 'outcome', 'succeeded', 'dedupe_key', 'cb1-a')))->>'status',
          'not_sent', 'a callback for a call still queued is not applied');
select is((select p.status::text || ' ' || c.status || ' ' || p.collected_minor
           from cp.procedure p join cp.carrier_call c using (procedure_id) where p.procedure_id = (select id from pay)),
          'pending queued 0', 'the payment stays pending and its call queued');
select is((select count(*)::int from cp.call_queue q join cp.carrier_call c using (call_id)
           where c.procedure_id = (select id from pay)), 1, 'still in the work queue, to be sent');
select is((select total from ledger), 0::bigint, 'no money moved');
select is((select kind || ' ' || call_status_then || ' ' || reported_outcome from report.call_conflicts
           where procedure_id = (select id from pay)), 'not_sent queued succeeded', 'kept as a not_sent conflict');
select is((select count(*)::int from cp.event where kind = 'outcome_conflict'
           and payload->>'kind' = 'not_sent'), 1, 'with an event');
select is((select count(*)::int from cp.callback_inbox where dedupe_key = 'cb1-a'), 0,
          'not kept in the inbox');

-- Requeued after the carrier throttled it: nothing of it was charged, so the same holds.
select pg_temp.claim('test_ng');
select pg_temp.settle((select id from pay), 'failed', 'throttled');
select is((adapter.record_callback('test_ng', jsonb_build_object(
              'correlator', (select c from cor), 'outcome', 'succeeded', 'dedupe_key', 'cb1-b')))->>'status',
          'not_sent', 'a callback for a call put back in the queue is not applied either');

-- Sent: the same callback now settles it.
select admin.advance_clock(interval '1 minute');
select pg_temp.claim('test_ng');
select is((adapter.record_callback('test_ng', jsonb_build_object(
              'correlator', (select c from cor), 'outcome', 'succeeded', 'dedupe_key', 'cb1-a')))->>'status',
          'applied', 'once the call is out, its callback applies');
select is((select status::text || ' ' || collected_minor from cp.procedure where procedure_id = (select id from pay)),
          'succeeded 20000', 'collected once');
create temp table settled as select total from ledger;

-- Contradictions of a settled charge.
select is((adapter.record_callback('test_ng', jsonb_build_object(
              'correlator', (select c from cor), 'outcome', 'failed', 'reason', 'insufficient_funds')))->>'status',
          'conflict', 'failed after succeeded: a conflict');
select is((adapter.record_callback('test_ng', jsonb_build_object(
              'correlator', (select c from cor), 'outcome', 'succeeded', 'amount_minor', 99999)))->>'status',
          'conflict', 'succeeded for another amount: a conflict');
select is((adapter.record_callback('test_ng', jsonb_build_object(
              'correlator', (select c from cor), 'outcome', 'succeeded', 'amount_minor', 20000)))->>'status',
          'duplicate', 'succeeded for the amount collected: a duplicate');
select is((select total from ledger), (select total from settled), 'no money moved by either');
select is((select status::text || ' ' || collected_minor from cp.procedure where procedure_id = (select id from pay)),
          'succeeded 20000', 'the payment is as it was');
select is((select string_agg(kind || ' ' || call_status_then, ',' order by conflict_id) from report.call_conflicts
           where procedure_id = (select id from pay)), 'not_sent queued,not_sent queued,outcome done,amount done',
          'each contradiction is listed for operators');

-- Another currency than the payment's: some other transaction.
create temp table pay2 as select (api.charge('acme', '+2348020000102', 'gems', 'cb2')->>'id')::bigint as id;
select pg_temp.claim('test_ng');
select is((adapter.record_callback('test_ng', jsonb_build_object(
              'correlator', (select correlator from cp.carrier_call where procedure_id = (select id from pay2)),
              'outcome', 'succeeded', 'currency', 'USD')))->>'status', 'conflict', 'a result in USD for NGN');
select is((select status::text from cp.procedure where procedure_id = (select id from pay2)), 'in_flight',
          'leaves the payment in flight');
select is((adapter.record_callback('test_ng', jsonb_build_object(
              'correlator', (select correlator from cp.carrier_call where procedure_id = (select id from pay2)),
              'outcome', 'succeeded', 'currency', 'ngn')))->>'status', 'applied', 'the currency, in any case, applies');

-- Payloads the ledger cannot take are refused before anything is written.
select throws_ok($$ select adapter.record_callback('test_ng', '[1]') $$, 'CP073', null, 'not an object');
select throws_ok($$ select adapter.record_callback('test_ng', '{"correlator": "x", "outcome": "succeeded",
                                                                "amount_minor": -5}') $$,
                 'CP073', null, 'a negative amount');
select throws_ok($$ select adapter.record_callback('test_ng', '{"correlator": "x", "outcome": "succeeded",
                                                                "amount_minor": 1e400}') $$,
                 'CP073', null, 'an amount beyond bigint');
select throws_ok($$ select adapter.record_callback('test_ng', '{"correlator": "x", "outcome": "succeeded",
                                                                "amount_minor": "100"}') $$,
                 'CP073', null, 'an amount that is not a number');
select throws_ok($$ select adapter.record_callback('test_ng', '{"correlator": "x", "outcome": "maybe"}') $$,
                 'CP080', null, 'an unknown outcome word');
select is((select count(*)::int from cp.callback_inbox where payload->>'correlator' = 'x'), 0, 'none kept');

-- Onboarding: callbacks need a credential check; an IP allow-list alone is not one.
select throws_ok($$ select admin.onboard_carrier('{"code": "ip_only", "name": "IP only", "country": "NG", "mcc": "621",
  "mnc": "40", "currency": "NGN", "timezone": "Africa/Lagos", "number_ranges": ["+234809"],
  "operations": {"charge": {"pattern": "callback"}},
  "callbacks": {"auth": [{"type": "ip_allow_list", "cidrs": ["10.0.0.0/8"]}]}}'::jsonb) $$,
                 'CP090', null, 'a carrier whose callbacks only an address list guards is refused');
select lives_ok($$ select admin.onboard_carrier('{"code": "signed", "name": "Signed", "country": "NG", "mcc": "621",
  "mnc": "41", "currency": "NGN", "timezone": "Africa/Lagos", "number_ranges": ["+234808"],
  "operations": {"charge": {"pattern": "callback"}},
  "callbacks": {"auth": [{"type": "ip_allow_list", "cidrs": ["10.0.0.0/8"]}, {"type": "bearer"}]}}'::jsonb) $$,
                'one with a credential check besides is onboarded');

select * from finish();
rollback;
