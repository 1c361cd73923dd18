-- api.request_optin / api.confirm_optin, and a GB one-time purchase that needs a confirmed opt-in.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(33);

-- GB: a one-time purchase needs an opt-in; the PIN goes out by SMS at once.
select is((api.request_optin('acme', '+447700900001', 'gems', 'o1'))->>'status', 'pending', 'opt-in requested');
select is((select count(*)::int from cp.carrier_call where operation = 'send_sms'), 1, 'one PIN SMS queued');
select matches(pg_temp.pin('+447700900001'), '^[0-9]{4}$', 'the SMS text carries a 4-digit PIN');
select is((select params->>'sensitive' from cp.carrier_call where operation = 'send_sms'), 'true',
          'the PIN SMS is marked sensitive (redacted in logs)');
select is((select pin_hash <> pg_temp.pin('+447700900001') from cp.optin), true, 'only a hash of the PIN is stored');
select is((api.request_optin('acme', '+447700900001', 'gems', 'o1'))->>'id', (select optin_id::text from cp.optin),
          'a repeated request returns the first opt-in');
select is((select count(*)::int from cp.optin), 1, 'and creates no second one');
select throws_ok($$ select api.request_optin('acme', '+447700900001', 'nothing', 'o2') $$, 'CP003', null,
                 'opt-in for an unknown product');

-- Without the opt-in, or with an unconfirmed one, the purchase is refused.
select throws_ok(format($$ select api.charge('acme', '+447700900001', 'gems', 'c0', 300, '{"optin_id": %s}') $$,
                        (select optin_id from cp.optin)), 'CP024', null, 'an unconfirmed opt-in does not allow a charge');

-- Wrong PIN: a document, not an exception, so the attempt is counted.
select is(api.confirm_optin('acme', (select optin_id from cp.optin), pg_temp.wrong_pin('+447700900001'))
          - 'id',
          '{"status": "pin_wrong", "error": {"code": "CP031", "message": "wrong PIN"}, "attempts_left": 2}'::jsonb,
          'a wrong PIN returns pin_wrong with CP031 and the attempts left');
select is((select attempts from cp.optin), 1, 'the wrong attempt is counted');

-- The right PIN confirms and records the consent.
select is((api.confirm_optin('acme', (select optin_id from cp.optin), pg_temp.pin('+447700900001')))->>'status',
          'confirmed', 'the right PIN confirms');
select is((select status::text from cp.optin), 'confirmed', 'opt-in confirmed');
select is((select method || ':' || (evidence->>'purpose') from cp.consent), 'pin:charge', 'consent recorded');
select is((api.confirm_optin('acme', (select optin_id from cp.optin), pg_temp.pin('+447700900001')))->>'status',
          'confirmed', 'confirming again with the right PIN is a harmless repeat');
select throws_ok(format($$ select api.confirm_optin('acme', %s, %L) $$, (select optin_id from cp.optin),
                        pg_temp.wrong_pin('+447700900001')), 'CP034', null,
                 'a wrong PIN on a confirmed opt-in: already confirmed');
select throws_ok(format($$ select api.confirm_optin('other', %s, %L) $$, (select optin_id from cp.optin),
                        pg_temp.pin('+447700900001')), 'CP030', null, 'another merchant''s opt-in is not found');

-- The confirmed opt-in allows one purchase, and is used up by it.
select is((api.charge('acme', '+447700900001', 'gems', 'c1', 300,
                      jsonb_build_object('optin_id', (select optin_id from cp.optin))))->>'status',
          'pending', 'a GB purchase with a confirmed opt-in is accepted');
select is((select status::text from cp.optin), 'used', 'the opt-in is used up');
select throws_ok(format($$ select api.charge('acme', '+447700900001', 'gems', 'c2', 300, '{"optin_id": %s}') $$,
                        (select optin_id from cp.optin)), 'CP024', null, 'an opt-in serves one purchase only');

-- Expiry: move the clock past the PIN's lifetime (10 minutes by default).
select api.request_optin('acme', '+447700900002', 'gems', 'o3');
select admin.advance_clock(interval '11 minutes');
select throws_ok(format($$ select api.confirm_optin('acme', %s, %L) $$,
                        (select max(optin_id) from cp.optin), pg_temp.pin('+447700900002')), 'CP032', null,
                 'an expired opt-in cannot be confirmed, even with the right PIN');

-- Too many tries: the third wrong PIN fails the opt-in; after that even the right PIN is refused.
select api.request_optin('acme', '+447700900003', 'gems', 'o4');
select is((api.confirm_optin('acme', (select max(optin_id) from cp.optin), '')) ->> 'attempts_left', '2',
          'an empty PIN is a wrong PIN');
select is((api.confirm_optin('acme', (select max(optin_id) from cp.optin), pg_temp.wrong_pin('+447700900003')))
          ->> 'status', 'pin_wrong', 'second wrong PIN');
select is(api.confirm_optin('acme', (select max(optin_id) from cp.optin), pg_temp.wrong_pin('+447700900003'))
          -> 'error' ->> 'code', 'CP033', 'the last wrong PIN reports CP033');
select is((select status::text || '/' || attempts from cp.optin where optin_id = (select max(optin_id) from cp.optin)),
          'failed/3', 'the opt-in failed after 3 attempts');
select throws_ok(format($$ select api.confirm_optin('acme', %s, %L) $$,
                        (select max(optin_id) from cp.optin), pg_temp.pin('+447700900003')), 'CP033', null,
                 'too many tries: even the right PIN is refused');
select throws_ok($$ select api.confirm_optin('acme', 999999, '1234') $$, 'CP030', null, 'unknown opt-in');

-- NG needs no opt-in for a one-time purchase, but an opt-in can still be asked for.
select is((api.request_optin('acme', '+2348020000001', 'gems', 'o5'))->>'status', 'pending', 'opt-in on NG');
select is((api.confirm_optin('acme', (select max(optin_id) from cp.optin), pg_temp.pin('+2348020000001')))->>'status',
          'confirmed', 'confirmed on NG');

-- Nothing about opt-ins was charged.
select is((select count(*)::int from cp.procedure where kind = 'charge'), 1, 'only the confirmed purchase charged');
select is((select count(*)::int from cp.procedure where kind = 'sms'), 4, 'one PIN SMS per opt-in');
select is((select count(*)::int from cp.carrier_call c join cp.call_queue q using (call_id)
           where c.operation = 'send_sms' and q.available_at > cp.clock_now()), 0,
          'PIN SMS are never held back by quiet hours');
select ok((select bool_and(e.kind = 'created') from cp.event e where e.aggregate_type = 'procedure'),
          'each procedure wrote its created event');

select * from finish();
rollback;
