-- "May this call be sent again?" (cp.may_send_again) and "how is an unsettled call settled?"
-- (cp.settlement_route): one case per route, the money defaults, the route in each reconciliation
-- claim, and what an expired lease does with a charge.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(29);

-- Carriers that differ only in what their spec offers for settling a call.
insert into cp.carrier (code, name, country, mcc, mnc, currency, timezone, regulation_code, spec) values
  ('asks', 'Asks', 'GB', '234', '91', 'GBP', 'Europe/London', 'GB',
   '{"operations": {"charge": {"pattern": "sync"}, "refund": {"pattern": "sync"}, "capture": {"pattern": "sync"},
                    "status": {"pattern": "sync", "covers": ["charge", "refund"]}}}'),
  ('charges_only', 'Charges only', 'GB', '234', '92', 'GBP', 'Europe/London', 'GB',
   '{"operations": {"charge": {"pattern": "sync"}, "refund": {"pattern": "sync"}, "status": {"pattern": "sync"}}}'),
  ('files', 'Files', 'GB', '234', '93', 'GBP', 'Europe/London', 'GB',
   '{"operations": {"charge": {"pattern": "report", "safe_to_repeat": true},
                    "refund": {"pattern": "report", "safe_to_repeat": true}},
     "reports": {"request": {"method": "GET", "path": "/reports/{{ date }}.csv"}}}'),
  ('dedupes', 'Dedupes', 'GB', '234', '94', 'GBP', 'Europe/London', 'GB',
   '{"operations": {"charge": {"pattern": "sync", "safe_to_repeat": true},
                    "refund": {"pattern": "sync", "safe_to_repeat": true},
                    "send_sms": {"pattern": "sync", "safe_to_repeat": true},
                    "optin_send_pin": {"pattern": "sync", "safe_to_repeat": false}}}'),
  ('silent', 'Silent', 'GB', '234', '95', 'GBP', 'Europe/London', 'GB',
   '{"operations": {"charge": {"pattern": "callback"}, "refund": {"pattern": "sync"}, "balance": {"pattern": "sync"}}}');

-- One real call, re-dressed as a call of p_operation to p_carrier queued the way cp.queue_call does.
create temp table base as select (api.charge('acme', '+2348020000001', 'gems', 'base')->>'id')::bigint as id;
create function pg_temp.route(p_carrier text, p_operation text) returns text
language sql as $$
    select cp.settlement_route(jsonb_populate_record(c, jsonb_build_object(
        'carrier_id', k.carrier_id, 'operation', p_operation,
        'pattern', coalesce(k.spec #>> array['operations', p_operation, 'pattern'], 'sync'),
        'safe_to_repeat', cp.may_send_again(k.spec, p_operation))))
    from cp.carrier_call c, cp.carrier k
    where k.code = p_carrier and c.procedure_id = (select id from base)
$$;

-- May this call be sent again?
select is(cp.may_send_again('{}', 'charge'), false, 'a charge the spec says nothing about is never repeated');
select is(cp.may_send_again('{}', 'refund'), false, 'nor a refund');
select is(cp.may_send_again('{}', 'capture'), false, 'nor a capture (it charges)');
select is(cp.may_send_again('{}', 'balance'), true, 'a balance query changes nothing: it may be repeated');
select is(cp.may_send_again('{"operations": {"charge": {"safe_to_repeat": true}}}', 'charge'), true,
          'a charge the carrier deduplicates may be repeated');
select is(cp.may_send_again('{"operations": {"charge": {"safe_to_repeat": true}}}', 'charge', false), false,
          'but not when it was queued while the carrier did not deduplicate it');
select is((select safe_to_repeat from cp.carrier_call where procedure_id = (select id from base)), false,
          'cp.queue_call records the answer for a charge');

-- One case per route.
select is(pg_temp.route('asks', 'charge'), 'status_query', 'status_query: a charge the status query covers');
select is(pg_temp.route('files', 'charge'), 'result_file', 'result_file: a charge on a carrier with result files');
select is(pg_temp.route('files', 'refund'), 'result_file',
          'result_file: a refund answered in result files, even when it could be repeated');
select is(pg_temp.route('dedupes', 'refund'), 'resend', 'resend: a refund the carrier deduplicates');
select is(pg_temp.route('dedupes', 'send_sms'), 'resend', 'resend: an SMS the carrier deduplicates');
select is(pg_temp.route('silent', 'charge'), 'wait', 'wait: a charge with no status query and no result file');
select is(pg_temp.route('dedupes', 'charge'), 'wait',
          'wait: reconciliation never sends a charge again, even to a carrier that deduplicates it');
select is(pg_temp.route('silent', 'refund'), 'wait', 'wait: a refund that cannot be repeated, asked about or listed');
select is(pg_temp.route('dedupes', 'optin_send_pin'), 'close', 'close: an unsafe PIN SMS (nothing to recover)');

-- Status coverage is read from the spec.
select is(pg_temp.route('asks', 'refund'), 'status_query', 'a refund is asked about when the status query covers it');
select is(pg_temp.route('charges_only', 'refund'), 'wait',
          'and is not when the status query covers charges only (the default)');
select is(pg_temp.route('charges_only', 'charge'), 'status_query', 'the default coverage is the charge');
select is(pg_temp.route('asks', 'capture'), 'wait', 'a capture is never repeated by default');

-- The route travels in each reconciliation claim, read from the carrier's spec at the claim.
select is((select count(*)::int from pg_temp.claim('test_ng')), 1, 'the NG charge is leased');
select admin.advance_clock(interval '2 minutes');
select adapter.expire_leases();
select admin.advance_clock(interval '5 minutes');
update cp.carrier_call set sent_at = sent_at - interval '1 minute';
select is((select array_agg(d->>'route') from adapter.claim_reconciliations('test_ng', 10) d), array['wait'],
          'the NG spec offers nothing: the claimed charge waits');
update cp.carrier set spec = jsonb_set(spec, '{operations,status}', '{"pattern": "sync"}') where code = 'test_ng';
select admin.advance_clock(interval '1 hour');
select is((select array_agg(d->>'route') from adapter.claim_reconciliations('test_ng', 10) d), array['status_query'],
          'once it has a status query, the next turn asks it');
update cp.carrier set spec = spec #- '{operations,status}' where code = 'test_ng';

-- An expired lease sends a charge again only to a carrier that deduplicated it when it was queued
-- and still does; any other charge may have reached the carrier and becomes unknown.
update cp.carrier set spec = jsonb_set(spec, '{operations,charge,safe_to_repeat}', 'true') where code = 'test_ng';
create temp table dedup as select (api.charge('acme', '+2348020000002', 'gems', 'ng-dedupe')->>'id')::bigint as id;
update cp.carrier set spec = jsonb_set(spec, '{operations,charge,safe_to_repeat}', 'false') where code = 'test_ng';
create temp table plain as select (api.charge('acme', '+2348020000003', 'gems', 'ng-plain')->>'id')::bigint as id;
update cp.carrier set spec = jsonb_set(spec, '{operations,charge,safe_to_repeat}', 'true') where code = 'test_ng';
select is((select count(*)::int from pg_temp.claim('test_ng')), 2, 'both charges are leased');
select admin.advance_clock(interval '2 minutes');
select is(adapter.expire_leases(), '{"unknown": 1, "requeued": 1}'::jsonb,
          'the lease expires: one charge requeued, one unknown');
select is((select status::text || ' ' || correlator = 'queued cp-' || call_id from cp.carrier_call
           where procedure_id = (select id from dedup)), true,
          'the deduplicated charge is queued again with the same correlator');
select is((select status::text from cp.carrier_call where procedure_id = (select id from plain)), 'unknown',
          'the charge queued while the carrier did not deduplicate stays unsettled, although it does now');
select is((select count(*)::int from pg_temp.claim('test_ng')), 1, 'the requeued charge is leased again');
update cp.carrier set spec = jsonb_set(spec, '{operations,charge,safe_to_repeat}', 'false') where code = 'test_ng';
select admin.advance_clock(interval '2 minutes');
select is(adapter.expire_leases(), '{"unknown": 1, "requeued": 0}'::jsonb,
          'once the carrier no longer deduplicates, an expired charge becomes unknown');

select * from finish();
rollback;
