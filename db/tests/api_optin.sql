-- api.request_optin / api.confirm_optin, and a GB one-time purchase that needs a confirmed opt-in;
-- the limits on PIN requests and wrong PINs; the PIN leaving the database once its SMS is sent.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(80);

-- A guess whose transaction is rolled back, as a caller holding its own transaction can do: the
-- answer it saw, or the error it got.
create function pg_temp.guess_and_undo(p_optin_id bigint, p_pin text) returns jsonb
language plpgsql as $$
declare
    v_answer jsonb;
begin
    begin
        v_answer := api.confirm_optin('acme', p_optin_id, p_pin);
        raise exception 'undo';
    exception when others then
        return coalesce(v_answer, jsonb_build_object('raised', sqlstate));
    end;
end
$$;

-- The durable count of PIN checks of an opt-in.
create function pg_temp.checks(p_optin_id bigint) returns integer
language sql as $$ select cp.optin_checks(o) from cp.optin o where optin_id = p_optin_id $$;

-- GB: a one-time purchase needs an opt-in; the PIN goes out by SMS at once.
select is((api.request_optin('acme', '+447700900001', 'gems', 'o1'))->>'status', 'pending', 'opt-in requested');
select is((select count(*)::int from cp.carrier_call where operation = 'send_sms'), 1, 'one PIN SMS queued');
select is((select count(*)::int from cp.carrier_call c join cp.call_queue q using (call_id)
           where c.operation = 'send_sms' and q.available_at > cp.clock_now()), 0,
          'PIN SMS are never held back by quiet hours');
select is((select params->>'sensitive' from cp.carrier_call where operation = 'send_sms'), 'true',
          'the PIN SMS is marked sensitive (redacted in logs)');
select is((select params->>'redacted_text' from cp.carrier_call where operation = 'send_sms'),
          'Your Acme Games PIN for 100 gems (purchase) is ******. Do not share it.',
          'its text masked is kept beside it');
select throws_ok(format($$ select api.confirm_optin('acme', %s, '000000') $$, (select optin_id from cp.optin)),
                 'CP039', null, 'a PIN cannot be checked before its SMS is handed to the carrier');
select is(pg_temp.checks((select optin_id from cp.optin)), 0, 'and that refusal was no check');
select matches(pg_temp.pin('+447700900001'), '^[0-9]{6}$', 'the SMS carried a 6-digit PIN (the default length)');
select is((select pin_hash <> pg_temp.pin('+447700900001') from cp.optin), true, 'only a hash of the PIN is stored');

-- Once the carrier has the SMS, no copy of the PIN is left.
select is((select params->>'text' from cp.carrier_call where operation = 'send_sms'),
          'Your Acme Games PIN for 100 gems (purchase) is ******. Do not share it.',
          'the sent SMS keeps only its masked text');
select is((select (params ? 'redacted_text') or params->>'redacted' <> 'true' from cp.carrier_call
           where operation = 'send_sms'), false, 'marked redacted, the masked copy folded in');
select is((select count(*)::int from cp.event e where e.payload::text ~ pg_temp.pin('+447700900001')), 0,
          'no event payload holds the PIN');

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
select pg_temp.pin('+447700900002');
select admin.advance_clock(interval '11 minutes');
select throws_ok(format($$ select api.confirm_optin('acme', %s, %L) $$,
                        (select max(optin_id) from cp.optin), pg_temp.pin('+447700900002')), 'CP032', null,
                 'an expired opt-in cannot be confirmed, even with the right PIN');

-- Too many tries: the third wrong PIN fails the opt-in; after that even the right PIN is refused.
select api.request_optin('acme', '+447700900003', 'gems', 'o4');
select pg_temp.pin('+447700900003');
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

-- A caller that rolls its transaction back after a wrong guess has spent that guess all the same.
select api.request_optin('acme', '+447700900004', 'gems', 'o5');
create temp table undone as select max(optin_id) as optin_id from cp.optin;
select pg_temp.pin('+447700900004');
select is(pg_temp.guess_and_undo((select optin_id from undone), pg_temp.wrong_pin('+447700900004')) ->> 'status',
          'pin_wrong', 'inside the undone transaction the guess was seen to be wrong');
select is((select attempts from cp.optin where optin_id = (select optin_id from undone)), 0,
          'the rollback took back the row''s count');
select is(pg_temp.checks((select optin_id from undone)), 1, 'but not the check');
select is((api.confirm_optin('acme', (select optin_id from undone), pg_temp.wrong_pin('+447700900004')))
          ->> 'attempts_left', '1', 'the next wrong PIN leaves one attempt, not two');
select pg_temp.guess_and_undo((select optin_id from undone), pg_temp.wrong_pin('+447700900004'));
select throws_ok(format($$ select api.confirm_optin('acme', %s, %L) $$, (select optin_id from undone),
                        pg_temp.pin('+447700900004')), 'CP033', null,
                 'after three checks, undone or not, even the right PIN is refused');
select is(pg_temp.guess_and_undo((select optin_id from undone), pg_temp.pin('+447700900004')) ->> 'raised', 'CP033',
          'and so is a guess that would be rolled back');

-- An opt-in requested in the same transaction as a guess cannot be guessed: its SMS is not sent.
select throws_ok($$ select api.confirm_optin('acme', (api.request_optin('acme', '+447700900005', 'gems', 'o6')
                                                      ->> 'id')::bigint, '123456') $$,
                 'CP039', null, 'request and guess in one transaction: refused');

-- NG needs no opt-in for a one-time purchase, but an opt-in can still be asked for.
select is((api.request_optin('acme', '+2348020000001', 'gems', 'o7'))->>'status', 'pending', 'opt-in on NG');
select is((api.confirm_optin('acme', (select max(optin_id) from cp.optin), pg_temp.pin('+2348020000001')))->>'status',
          'confirmed', 'confirmed on NG');

-- Nothing about opt-ins was charged.
select is((select count(*)::int from cp.procedure where kind = 'charge'), 1, 'only the confirmed purchase charged');
select is((select count(*)::int from cp.procedure where kind = 'sms'), (select count(*)::int from cp.optin),
          'one PIN SMS per opt-in');
select ok(not exists (select 1 from cp.procedure p where not exists (
              select 1 from cp.event e where e.aggregate_type = 'procedure' and e.aggregate_id = p.procedure_id
                                         and e.kind = 'created')),
          'each procedure wrote its created event');

-- Limits are regulation data, with defaults for every preset.
select is((select jsonb_build_object(
               'pin_length', r->'pin_length', 'pin_max_attempts', r->'pin_max_attempts',
               'pin_requests_per_msisdn_hour', r->'pin_requests_per_msisdn_hour',
               'pin_requests_per_msisdn_day', r->'pin_requests_per_msisdn_day',
               'pin_failures_per_msisdn_day', r->'pin_failures_per_msisdn_day',
               'pin_failures_per_msisdn_30d', r->'pin_failures_per_msisdn_30d',
               'pin_requests_per_merchant_hour', r->'pin_requests_per_merchant_hour',
               'pin_failures_per_merchant_day', r->'pin_failures_per_merchant_day')
           from cp.effective_rules((select carrier_id from cp.carrier where code = 'test_gb')) r),
          '{"pin_length": 6, "pin_max_attempts": 3, "pin_requests_per_msisdn_hour": 5,
            "pin_requests_per_msisdn_day": 10, "pin_failures_per_msisdn_day": 10, "pin_failures_per_msisdn_30d": 30,
            "pin_requests_per_merchant_hour": 5000, "pin_failures_per_merchant_day": 1000}'::jsonb,
          'the defaults');
-- Guesses allowed on one number in 30 days over the PIN space (each guess against a fresh PIN, or
-- one of max_attempts against the same PIN): the odds of forging its consent in that time.
select ok(bool_and(f30::numeric / (power(10::numeric, len) - (tries - 1)) <= 0.0001),
          'every shipped preset keeps a brute force on one number within 1 in 10,000 per 30 days')
from (select (r->>'pin_failures_per_msisdn_30d')::int as f30, (r->>'pin_length')::int as len,
             (r->>'pin_max_attempts')::int as tries
      from cp.regulation g
      cross join lateral (select jsonb_build_object('pin_length', 6, 'pin_max_attempts', 3,
                                                    'pin_failures_per_msisdn_30d', 30) || g.rules as r) x) p;
select throws_ok($$ select admin.upsert_regulation('XX', 'x', 'x', '{"pin_length": 3}') $$, 'CP080', null,
                 'a PIN shorter than 4 digits is refused');
select throws_ok($$ select admin.upsert_regulation('XX', 'x', 'x', '{"pin_failures_per_msisdn_day": 0}') $$, 'CP080',
                 null, 'a limit must be positive');
select throws_ok($$ select admin.onboard_carrier('{"code": "bad", "name": "Bad", "country": "NG", "mcc": "621",
                    "mnc": "99", "currency": "NGN", "timezone": "Africa/Lagos", "number_ranges": ["+234808"],
                    "regulation": "NG", "rules": {"pin_length": "6"}, "operations": {"send_sms": {}}}') $$,
                 'CP090', null, 'a carrier override is checked the same way');

-- A preset (or a carrier) can keep 4-digit PINs.
update cp.carrier set rules_override = '{"pin_length": 4}' where code = 'test_ng';
select api.request_optin('acme', '+2348020000002', 'gems', 'o8');
select matches(pg_temp.pin('+2348020000002'), '^[0-9]{4}$', 'pin_length 4 sends 4 digits');
update cp.carrier set rules_override = '{}' where code = 'test_ng';

-- PIN requests per number: 5 an hour, 10 a day, whichever merchant asks.
select api.request_optin('acme', '+2348020000010', 'gems', 'r' || i) from generate_series(1, 5) i;
select throws_ok($$ select api.request_optin('other', '+2348020000010', 'coins', 'r6') $$, 'CP035', null,
                 'the sixth PIN of the hour is refused, even to another merchant');
select throws_ok($$ select api.subscribe('acme', '+2348020000010', 'club', 'daily', 'r7') $$, 'CP035', null,
                 'a subscription that needs a PIN too');
select is((select count(*)::int from cp.subscription where subscriber_id =
               (select subscriber_id from cp.subscriber where msisdn = '+2348020000010')), 0,
          'and the refused subscription left nothing behind');
select admin.advance_clock(interval '61 minutes');
select api.request_optin('acme', '+2348020000010', 'gems', 'r' || i) from generate_series(8, 12) i;
select throws_ok($$ select api.request_optin('acme', '+2348020000010', 'gems', 'r13') $$, 'CP035', null,
                 'ten in a day: the eleventh is refused in a new hour');
select is((select count(*)::int from cp.procedure p join cp.subscriber s using (subscriber_id)
           where s.msisdn = '+2348020000010' and p.kind = 'sms'), 10, 'the number received ten PIN SMS');

-- A merchant's budget of PINs per hour on a carrier.
select admin.advance_clock(interval '61 minutes');
update cp.carrier set rules_override = '{"pin_requests_per_merchant_hour": 2}' where code = 'test_ng';
select api.request_optin('acme', '+23480200000' || (20 + i), 'gems', 'm' || i) from generate_series(1, 2) i;
select throws_ok($$ select api.request_optin('acme', '+2348020000023', 'gems', 'm3') $$, 'CP036', null,
                 'the merchant''s third PIN of the hour on the carrier is refused');
select is((api.request_optin('other', '+2348020000023', 'coins', 'm4'))->>'status', 'pending',
          'another merchant''s budget is its own');
update cp.carrier set rules_override = '{}' where code = 'test_ng';

-- Wrong PINs per number: ten a day lock it, for every merchant, until they age out.
select admin.advance_clock(interval '1 day');
create temp table lock_optins as
select (api.request_optin('acme', '+2348020000030', 'gems', 'l' || i) ->> 'id')::bigint as optin_id, i
from generate_series(1, 4) i;
select pg_temp.pin('+2348020000030');
select is((select array_agg(api.confirm_optin('acme', o.optin_id, '0000000') ->> 'status' order by o.i, g)
           from lock_optins o cross join generate_series(1, 3) g where o.i <= 3),
          array['pin_wrong', 'pin_wrong', 'failed', 'pin_wrong', 'pin_wrong', 'failed',
                'pin_wrong', 'pin_wrong', 'failed'], 'nine wrong PINs over three opt-ins');
select is(api.confirm_optin('acme', (select optin_id from lock_optins where i = 4), '0000000')
          - 'id' - 'locked_until',
          '{"status": "locked", "error": {"code": "CP037", "message": "wrong PIN; too many for this number"},
            "attempts_left": 2}'::jsonb, 'the tenth locks the number and says so');
select throws_ok(format($$ select api.confirm_optin('acme', %s, '0000000') $$,
                        (select optin_id from lock_optins where i = 4)), 'CP037', null,
                 'a locked number gets no more checks');
select throws_ok($$ select api.request_optin('other', '+2348020000030', 'coins', 'l5') $$, 'CP037', null,
                 'and is sent no more PINs, whichever merchant asks');
select is(cp.msisdn_pin_lock((select subscriber_id from cp.subscriber where msisdn = '+2348020000030'),
                             cp.effective_rules((select carrier_id from cp.carrier where code = 'test_ng'))),
          (select max(expires_at) + interval '1 day' from cp.optin o join lock_optins l using (optin_id)
           where l.i = 1), 'until a day after the opt-in holding the oldest wrong PINs expired');
select admin.advance_clock(interval '1 day 11 minutes');
select is((api.request_optin('other', '+2348020000030', 'coins', 'l6'))->>'status', 'pending',
          'a day later the number is free again');

-- Thirty days: the wrong PINs of a number are counted over 30 days too (a low limit to show it).
update cp.carrier set rules_override = '{"pin_failures_per_msisdn_30d": 2}' where code = 'test_ng';
select api.request_optin('acme', '+2348020000040', 'gems', 'f1');
select pg_temp.pin('+2348020000040');
select api.confirm_optin('acme', (select max(optin_id) from cp.optin), '0000000');
select admin.advance_clock(interval '2 days');
select api.request_optin('acme', '+2348020000040', 'gems', 'f2');
select pg_temp.pin('+2348020000040');
select is(api.confirm_optin('acme', (select max(optin_id) from cp.optin), '0000000') ->> 'status', 'locked',
          'two wrong PINs two days apart reach a 30-day limit of two');
select throws_ok($$ select api.request_optin('acme', '+2348020000040', 'gems', 'f3') $$, 'CP037', null,
                 'locked for the 30 days');
update cp.carrier set rules_override = '{}' where code = 'test_ng';

-- A merchant's daily budget of wrong PINs on a carrier (a low one to show it).
update cp.carrier set rules_override = '{"pin_failures_per_merchant_day": 2}' where code = 'test_ng';
select api.request_optin('other', '+23480200000' || (50 + i), 'coins', 'b' || i) from generate_series(1, 3) i;
select pg_temp.pin('+23480200000' || (50 + i)) from generate_series(1, 3) i;
select api.confirm_optin('other', o.optin_id, '0000000')
from cp.optin o join cp.subscriber s using (subscriber_id)
where s.msisdn in ('+2348020000051', '+2348020000052');
select throws_ok(format($$ select api.confirm_optin('other', %s, '0000000') $$,
                        (select o.optin_id from cp.optin o join cp.subscriber s using (subscriber_id)
                         where s.msisdn = '+2348020000053')), 'CP038', null,
                 'two wrong PINs spend a budget of two: the merchant checks no more PINs there today');
update cp.carrier set rules_override = '{}' where code = 'test_ng';

-- Folding: an expired opt-in's checks move into its row, rolled-back ones as wrong PINs, and its
-- sequence goes.
select is(to_regclass(cp.pin_checks_sequence((select optin_id from undone))) is not null, true,
          'a sequence counts the checks of an opt-in until it is folded');
select admin.advance_clock(interval '1 hour');
select ok(cp.close_pin_checks() > 0, 'expired opt-ins are folded');
select is((select attempts || '/' || pin_checks from cp.optin where optin_id = (select optin_id from undone)), '3/3',
          'three checks, all counted as wrong PINs (two were rolled back)');
select is(to_regclass(cp.pin_checks_sequence((select optin_id from undone))), null, 'its sequence is dropped');
select is((select count(*)::int from cp.optin where pin_checks is null), 0, 'every expired opt-in was folded');
select is((select status::text from cp.optin where optin_id = (select max(optin_id) from lock_optins)), 'expired',
          'a pending one is now expired');
select is((select count(*)::int from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = 'cp' and c.relkind = 'S' and c.relname like 'pin\_checks\_%'), 0, 'no sequence is left');

-- A PIN SMS that failed before reaching the carrier is sent again with its PIN; the failed call
-- keeps only the masked text.
select api.request_optin('acme', '+2348020000060', 'gems', 't1');
create temp table retried as select max(call_id) as call_id, (select pin from (select substring(params->>'text'
    from 'is ([0-9]+)') as pin from cp.carrier_call where call_id = (select max(call_id) from cp.carrier_call)) x) as pin
from cp.carrier_call;
select pg_temp.claim('test_ng');
select adapter.complete_calls(jsonb_build_array(jsonb_build_object('call_id', (select call_id from retried),
                                                                   'outcome', 'failed', 'reason', 'transient')));
select is((select params->>'text' from cp.carrier_call where call_id = (select call_id from retried)) ~ '[0-9]{6}',
          false, 'the failed call keeps no PIN');
select is((select params->>'text' ~ (select pin from retried) from cp.carrier_call
           where procedure_id = (select procedure_id from cp.carrier_call where call_id = (select call_id from retried))
             and call_id > (select call_id from retried)), true, 'the new attempt carries the PIN to send');

-- A connector that logged the text anyway: the log keeps a stand-in, not the PIN.
select pg_temp.claim('test_ng');
select adapter.complete_calls(jsonb_build_array(jsonb_build_object(
    'call_id', c.call_id, 'outcome', 'succeeded',
    'request', jsonb_build_object('body', jsonb_build_object('message', c.params->>'text')),
    'response', jsonb_build_object('ok', true))))
from cp.carrier_call c where c.call_id = (select max(call_id) from cp.carrier_call);
select is((select request from cp.carrier_log order by log_id desc limit 1),
          '{"redacted": "held a secret of this SMS"}'::jsonb, 'the logged request that held the PIN is replaced');
select is((select response from cp.carrier_log order by log_id desc limit 1), '{"ok": true}'::jsonb,
          'the rest of the log is kept');
select is((select count(*)::int from cp.carrier_call where operation = 'send_sms'
           and status in ('done', 'failed', 'awaiting_result', 'unknown') and params->>'text' ~ 'is [0-9]'), 0,
          'no sent PIN SMS holds its PIN');

select * from finish();
rollback;
