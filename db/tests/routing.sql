-- Routes and number lookup: a range's own carrier first, an aggregator's route when it is down or
-- disabled, a ported number by its lookup until the answer expires.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(12);

-- An aggregator that can also bill test_ng's range, and a second NG network with its own range.
select pg_temp.onboard_ng('{"code": "agg_ng", "name": "Aggregator NG", "mnc": "99", "number_ranges": ["+234809"],
  "terms": {"carrier_share_bp": 4500}, "routes": [{"prefix": "+234802", "priority": 10}],
  "operations": {"charge": {"pattern": "sync"}, "send_sms": {"pattern": "sync"}}}');
select pg_temp.onboard_ng('{"code": "other_ng", "name": "Other NG", "mnc": "30", "number_ranges": ["+234805"],
  "operations": {"charge": {"pattern": "sync"}, "send_sms": {"pattern": "sync"}}}');
select admin.add_price_point('acme', 'gems', 'one_time', 20000, 'NGN', 'gems_100', p_country => 'NG');

select is((cp.carrier_for_msisdn('+2348020000001')).code, 'test_ng', 'a range''s own carrier comes first');
select is((select string_agg(k.code || ':' || r.priority, ',' order by r.priority)
             from cp.routes_for_msisdn('+2348020000001') r join cp.carrier k using (carrier_id)),
          'test_ng:0,agg_ng:10', 'then its secondary routes by priority');
select is((cp.carrier_for_msisdn('+2348090000001')).code, 'agg_ng', 'the aggregator''s own range is its');

-- test_ng is down: a call of it has been held as unreachable for over a minute.
select api.charge('acme', '+2348020000001', 'gems', 'k1');
update cp.carrier_call set unreachable_since = cp.clock_now() - interval '2 minutes' where status = 'queued';
select ok(cp.carrier_down((select carrier_id from cp.carrier where code = 'test_ng')), 'its breaker is open');
select is((api.charge('acme', '+2348020000002', 'gems', 'k2'))->>'carrier', 'agg_ng',
          'a new purchase fails over to the next route');
select is((select carrier_id from cp.procedure where procedure_id = (select max(procedure_id) from cp.procedure)),
          (select carrier_id from cp.carrier where code = 'agg_ng'), 'and is charged there');
update cp.carrier_call set unreachable_since = null;
select admin.set_carrier_enabled('test_ng', false);
select is((cp.carrier_for_msisdn('+2348020000003')).code, 'agg_ng', 'a disabled carrier is skipped too');
select admin.set_carrier_enabled('test_ng', true);

-- A number ported from test_ng to other_ng (MCC/MNC 621/30): the lookup routes it, until it expires.
select is(adapter.record_number_lookup('+2348020000004', '621', '30', 3600)->>'carrier', 'other_ng',
          'a lookup names the network serving the number now');
select is((api.charge('acme', '+2348020000004', 'gems', 'k3'))->>'carrier', 'other_ng',
          'the ported number is charged on its new network');
select admin.advance_clock(interval '2 hours');
select is((cp.carrier_for_msisdn('+2348020000004')).code, 'test_ng', 'an expired answer routes by prefix again');
select adapter.record_number_lookup('+2348020000005', '999', '01', 3600);
select throws_ok($$ select api.charge('acme', '+2348020000005', 'gems', 'k4') $$, 'CP004', null,
                 'a number on a network that is none of ours is refused');
select throws_ok($$ select admin.onboard_carrier('{"code": "bad_ng", "name": "Bad", "country": "NG", "mcc": "621",
  "mnc": "98", "currency": "NGN", "timezone": "Africa/Lagos", "number_ranges": ["+234808"], "regulation": "NG",
  "routes": [{"prefix": "+234802", "priority": 0}], "operations": {"charge": {"pattern": "sync"}}}'::jsonb) $$,
                 'CP090', null, 'priority 0 belongs to the range''s own carrier');

select * from finish();
rollback;
