-- Regulation evaluated in the procedures: per-transaction, daily and monthly caps, charging hours,
-- caps only in the preset's cap_currency, SMS quiet hours.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(24);

-- GB preset: £40 per transaction. A £45 price point needs an opt-in like any GB purchase, then hits the cap.
select admin.add_price_point('acme', 'gems', 'one_time', 4500, 'GBP', 'gems_big', p_carrier => 'test_gb');
select api.request_optin('acme', '+447700900001', 'gems', 'o1');
select api.confirm_optin('acme', (select max(optin_id) from cp.optin), pg_temp.pin('+447700900001'));
select throws_ok(format($$ select api.charge('acme', '+447700900001', 'gems', 'c1', 4500, '{"optin_id": %s}') $$,
                        (select max(optin_id) from cp.optin)), 'CP020', null, 'GB: £45 exceeds the £40 cap');
select is((select status::text from cp.optin where optin_id = (select max(optin_id) from cp.optin)), 'confirmed',
          'the refused purchase did not use up the opt-in (nothing half-written)');
select is((api.charge('acme', '+447700900001', 'gems', 'c2', 500,
                      jsonb_build_object('optin_id', (select max(optin_id) from cp.optin))))->>'status',
          'pending', 'the same opt-in serves a purchase under the cap');
select throws_ok($$ select api.subscribe('acme', '+447700900002', 'club', 'monthly', 's1') $$, 'CP020', null,
                 'caps apply to subscriptions too')
from (select admin.add_price_point('acme', 'club', 'monthly', 4100, 'GBP', 'club_big', p_carrier => 'test_gb')) x;

-- A carrier with PK-like caps in its rules_override: 50000 NGN a day, 100000 NGN a month.
select admin.onboard_carrier('{"code": "test_caps", "name": "Test caps", "country": "NG", "mcc": "621",
  "mnc": "30", "currency": "NGN", "timezone": "Africa/Lagos", "number_ranges": ["+234809"], "regulation": "NG",
  "rules": {"cap_currency": "NGN", "daily_cap_minor": 50000, "monthly_cap_minor": 100000},
  "operations": {"charge": {"pattern": "sync"}, "refund": {"pattern": "sync"}, "send_sms": {}}}'::jsonb);
select admin.add_price_point('acme', 'gems', 'one_time', 20000, 'NGN', 'gems_100', p_carrier => 'test_caps');
select is((cp.effective_rules((select carrier_id from cp.carrier where code = 'test_caps')))->>'daily_cap_minor',
          '50000', 'the override is part of the effective rules');
select lives_ok($$ select api.charge('acme', '+2348090000001', 'gems', 'd1') $$, 'day 1: 20000');
select lives_ok($$ select api.charge('acme', '+2348090000001', 'gems', 'd2') $$, 'day 1: 40000');
select throws_ok($$ select api.charge('acme', '+2348090000001', 'gems', 'd3') $$, 'CP021', null,
                 'day 1: a third 20000 would pass the 50000 daily cap (pending charges count)');
select lives_ok($$ select api.charge('acme', '+2348090000002', 'gems', 'd4') $$, 'caps are per subscriber');

-- A failed charge does not count; a refunded one counts net of the refund.
select pg_temp.claim('test_caps');
select pg_temp.settle((select procedure_id from cp.procedure p join cp.idempotency i
                       on i.response->>'id' = p.procedure_id::text where i.idem_key = 'd2'), 'failed', 'insufficient_funds');
select lives_ok($$ select api.charge('acme', '+2348090000001', 'gems', 'd5') $$, 'a failed charge frees the cap');
select throws_ok($$ select api.charge('acme', '+2348090000001', 'gems', 'd6') $$, 'CP021', null, 'full again');

-- Next day (local time): the daily cap is fresh, the monthly one carries on.
select admin.advance_clock(interval '1 day');
select lives_ok($$ select api.charge('acme', '+2348090000001', 'gems', 'd7') $$, 'day 2: 60000 this month');
select lives_ok($$ select api.charge('acme', '+2348090000001', 'gems', 'd8') $$, 'day 2: 80000 this month');
select admin.advance_clock(interval '1 day');
select lives_ok($$ select api.charge('acme', '+2348090000001', 'gems', 'd9') $$, 'day 3: 100000 this month');
select throws_ok($$ select api.charge('acme', '+2348090000001', 'gems', 'd10') $$, 'CP022', null,
                 'day 3: the monthly cap of 100000 is reached');
select is((select count(*)::int from cp.idempotency where idem_key in ('d3', 'd6', 'd10')), 0,
          'refused charges left no idempotency record');

-- Caps are in the preset's cap_currency only: an EU-preset carrier billing NGN has no EUR caps.
select admin.onboard_carrier('{"code": "test_eu_ngn", "name": "Test EU NGN", "country": "NG", "mcc": "621",
  "mnc": "40", "currency": "NGN", "timezone": "Africa/Lagos", "number_ranges": ["+234807"], "regulation": "EU",
  "operations": {"charge": {}, "send_sms": {}}}'::jsonb);
select admin.add_price_point('acme', 'gems', 'one_time', 999900, 'NGN', 'gems_lots', p_carrier => 'test_eu_ngn');
select is(cp.rule_cap(cp.effective_rules((select carrier_id from cp.carrier where code = 'test_eu_ngn')),
                      'max_transaction_minor', 'NGN'), null, 'no EUR cap applies to NGN amounts');
select lives_ok($$ select api.charge('acme', '+2348070000001', 'gems', 'e1', 999900) $$,
                '999900 NGN passes where 5000 EUR is the cap');
select is(cp.rule_cap('{"cap_currency": "EUR", "max_transaction_minor": 5000}', 'max_transaction_minor', 'EUR'),
          5000::bigint, 'the same cap applies in EUR');

-- Charging hours from the carrier spec (local time).
select admin.onboard_carrier('{"code": "test_hours", "name": "Test hours", "country": "NG", "mcc": "621",
  "mnc": "50", "currency": "NGN", "timezone": "Africa/Lagos", "number_ranges": ["+234805"], "regulation": "NG",
  "charging_hours": "08:00-20:00", "operations": {"charge": {}, "send_sms": {}}}'::jsonb);
select admin.add_price_point('acme', 'gems', 'one_time', 20000, 'NGN', 'gems_100', p_carrier => 'test_hours');
select admin.set_clock('2030-03-10 12:00+00');  -- 13:00 in Lagos
select lives_ok($$ select api.charge('acme', '+2348050000001', 'gems', 'h1') $$, '13:00 local is allowed');
select admin.set_clock('2030-03-10 19:30+00');  -- 20:30 in Lagos
select throws_ok($$ select api.charge('acme', '+2348050000001', 'gems', 'h2') $$, 'CP023', null,
                 '20:30 local is outside 08:00-20:00');
select admin.set_clock('2030-03-11 06:59+00');  -- 07:59 in Lagos
select throws_ok($$ select api.charge('acme', '+2348050000001', 'gems', 'h3') $$, 'CP023', null, '07:59 local too');
select admin.advance_clock(interval '1 minute');
select lives_ok($$ select api.charge('acme', '+2348050000001', 'gems', 'h4') $$, '08:00 local opens the window');

-- SMS quiet hours defer notices (never PINs): India's commercial SMS window is 09:00-21:00.
select is(cp.next_sms_time((select rules from cp.regulation where code = 'IN'), 'Asia/Kolkata', '2030-03-10 17:00+00'),
          '2030-03-11 03:30+00'::timestamptz, 'IN: an SMS due at 22:30 local waits until 09:00');

select * from finish();
rollback;
