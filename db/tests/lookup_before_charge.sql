-- Number portability before a charge: a range whose carrier says so (operations.lookup.before_charge) holds
-- a purchase until a number lookup routes it; a fresh cached answer skips the lookup, an expired one asks
-- again, a failed lookup falls back to the range's route, and the charge is queued once, to one carrier.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(20);

select pg_temp.onboard_ng('{"code": "look_ng", "name": "Looks up NG", "mnc": "60", "number_ranges": ["+234806"],
  "operations": {"charge": {"pattern": "sync"}, "send_sms": {"pattern": "sync"},
                 "lookup": {"pattern": "sync", "ttl_s": 3600, "before_charge": true}}}');
select pg_temp.onboard_ng('{"code": "port_ng", "name": "Ported-to NG", "mnc": "30", "number_ranges": ["+234805"],
  "operations": {"charge": {"pattern": "sync"}, "send_sms": {"pattern": "sync"}}}');
select pg_temp.onboard_ng('{"code": "agg_ng", "name": "Aggregator NG", "mnc": "99", "number_ranges": ["+234809"],
  "terms": {"carrier_share_bp": 4500}, "routes": [{"prefix": "+234805", "priority": 10}],
  "operations": {"charge": {"pattern": "sync"}, "send_sms": {"pattern": "sync"}}}');
select admin.add_price_point('acme', 'gems', 'one_time', 20000, 'NGN', 'gems_100', p_country => 'NG');

create function pg_temp.calls(p_procedure_id bigint, p_operation text) returns text
language sql as $$
    select coalesce(string_agg(k.code, ',' order by c.call_id), '') from cp.carrier_call c join cp.carrier k using (carrier_id)
    where c.procedure_id = p_procedure_id and c.operation = p_operation
$$;
-- The adapter's answer to the lookup call of a procedure.
create function pg_temp.answer_lookup(p_procedure_id bigint, p_result jsonb) returns jsonb
language sql as $$
    select adapter.complete_calls(jsonb_agg(jsonb_build_object('call_id', c.call_id, 'lease', c.lease_no) || p_result))
    from cp.carrier_call c where c.procedure_id = p_procedure_id and c.operation = 'lookup' and c.status = 'leased'
$$;
create temp table p (k text primary key, id bigint);
create function pg_temp.buy(p_k text, p_msisdn text) returns bigint
language sql as $$
    insert into p values (p_k, (api.charge('acme', p_msisdn, 'gems', p_k)->>'id')::bigint) returning id
$$;
create function pg_temp.id(p_k text) returns bigint language sql as $$ select id from p where k = p_k $$;

-- 1. No answer for the number yet: the purchase is held while a lookup is queued.
select pg_temp.buy('k1', '+2348060000001');
select is(pg_temp.calls(pg_temp.id('k1'), 'lookup') || '/' || pg_temp.calls(pg_temp.id('k1'), 'charge'), 'look_ng/',
          'a purchase on a range that asks first is held for a lookup through its carrier');
select is((select status::text from cp.procedure where procedure_id = pg_temp.id('k1')), 'pending', 'pending meanwhile');

-- 2. The answer says the number was ported to port_ng (621/30): charged there, once.
select count(*) from pg_temp.claim('look_ng');
select pg_temp.answer_lookup(pg_temp.id('k1'), '{"outcome": "succeeded", "mcc": "621", "mnc": "30"}');
select is(pg_temp.calls(pg_temp.id('k1'), 'charge'), 'port_ng', 'the answer routes the charge to the network it names');
select is((select k.code from cp.procedure p join cp.carrier k using (carrier_id) where p.procedure_id = pg_temp.id('k1')),
          'port_ng', 'the payment is port_ng''s');
select is((select k.code from cp.subscriber s join cp.carrier k using (carrier_id) where s.msisdn = '+2348060000001'),
          'port_ng', 'and so is the subscriber');
select is((select count(*)::int from cp.event where aggregate_type = 'procedure' and aggregate_id = pg_temp.id('k1')
           and kind = 'rerouted'), 1, 'recorded as an event');
-- The adapter sends the same answer again (it could not tell whether it committed).
select adapter.complete_calls(jsonb_agg(jsonb_build_object('call_id', c.call_id, 'lease', c.lease_no, 'outcome', 'succeeded',
                                                           'mcc', '621', 'mnc', '30')))
from cp.carrier_call c where c.procedure_id = pg_temp.id('k1') and c.operation = 'lookup';
select lives_ok($$select cp.route_held_charge(pg_temp.id('k1'), 20000, null)$$, 'routing it again');
select is(pg_temp.calls(pg_temp.id('k1'), 'charge'), 'port_ng', 'queues no second charge');

-- 3. A fresh cached answer skips the lookup; an expired one asks again.
select pg_temp.buy('k2', '+2348060000001');
select is(pg_temp.calls(pg_temp.id('k2'), 'lookup') || '/' || pg_temp.calls(pg_temp.id('k2'), 'charge'), '/port_ng',
          'a fresh answer routes at once, no lookup');
select admin.advance_clock(interval '2 hours');
select pg_temp.buy('k3', '+2348060000001');
select is(pg_temp.calls(pg_temp.id('k3'), 'lookup') || '/' || pg_temp.calls(pg_temp.id('k3'), 'charge'), 'look_ng/',
          'an expired answer (ttl_s 3600) is asked again');

-- 4. The lookup times out: the number's range routes the charge, recorded as a fallback.
select count(*) from pg_temp.claim('look_ng') d where d->>'operation' = 'lookup';
select pg_temp.answer_lookup(pg_temp.id('k3'), '{"outcome": "unknown", "reason": "unknown"}');
select is(pg_temp.calls(pg_temp.id('k3'), 'charge'), 'look_ng', 'a failed lookup falls back to the range''s route');
select is((select payload->>'reason' from cp.event where aggregate_type = 'procedure' and aggregate_id = pg_temp.id('k3')
           and kind = 'lookup_fallback'), 'unknown', 'recorded as a lookup_fallback event');
select is((select status::text from cp.carrier_call where procedure_id = pg_temp.id('k3') and operation = 'lookup'),
          'failed', 'the lookup call is closed, not reconciled');

-- 5. The ported-to network's breaker is open: the aggregator that reaches it takes the charge.
update cp.carrier_breaker set state = 'open'
where carrier_id = (select carrier_id from cp.carrier where code = 'port_ng');
insert into cp.carrier_breaker (carrier_id, state)
select carrier_id, 'open' from cp.carrier where code = 'port_ng' on conflict (carrier_id) do nothing;
select pg_temp.buy('k4', '+2348060000004');
select count(*) from pg_temp.claim('look_ng') d where d->>'operation' = 'lookup';
select pg_temp.answer_lookup(pg_temp.id('k4'), '{"outcome": "succeeded", "mcc": "621", "mnc": "30"}');
select is(pg_temp.calls(pg_temp.id('k4'), 'charge'), 'agg_ng', 'failover to the next route of the ported-to network');
update cp.carrier_breaker set state = 'closed';

-- 6. A network none of ours: the payment fails, nothing is charged.
select pg_temp.buy('k5', '+2348060000005');
select count(*) from pg_temp.claim('look_ng') d where d->>'operation' = 'lookup';
select pg_temp.answer_lookup(pg_temp.id('k5'), '{"outcome": "succeeded", "mcc": "999", "mnc": "01"}');
select is((select status::text || '/' || reason from cp.procedure where procedure_id = pg_temp.id('k5')),
          'failed/subscriber_invalid', 'a number on another network fails');
select is(pg_temp.calls(pg_temp.id('k5'), 'charge'), '', 'and is charged nowhere');

-- 7. A refused lookup falls back too; a range that does not ask is charged at once.
select pg_temp.buy('k6', '+2348060000006');
select count(*) from pg_temp.claim('look_ng') d where d->>'operation' = 'lookup';
select pg_temp.answer_lookup(pg_temp.id('k6'), '{"outcome": "failed", "reason": "rejected"}');
select is(pg_temp.calls(pg_temp.id('k6'), 'charge'), 'look_ng', 'a refused lookup falls back');
select pg_temp.buy('k7', '+2348050000007');
select is(pg_temp.calls(pg_temp.id('k7'), 'lookup') || '/' || pg_temp.calls(pg_temp.id('k7'), 'charge'), '/port_ng',
          'a range whose carrier does not ask is charged at once');

-- 8. While the carrier that answers lookups is down, its purchases are not held for one.
insert into cp.carrier_breaker (carrier_id, state)
select carrier_id, 'open' from cp.carrier where code = 'look_ng'
on conflict (carrier_id) do update set state = 'open';
select pg_temp.buy('k8', '+2348060000008');
select is(pg_temp.calls(pg_temp.id('k8'), 'lookup'), '', 'no lookup through a carrier that is down');
select isnt(pg_temp.calls(pg_temp.id('k8'), 'charge'), '', 'the range''s routes charge it');

select * from finish();
rollback;
