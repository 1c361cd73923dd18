-- History shipping: correlation of outbox rows, bucket-locked claims, completion and the lag view.
begin;
select plan(17);

insert into cp.regulation (code, name, source) values ('t', 'T', 'test');
insert into cp.country (country, name, vat_bp) values ('GB', 'United Kingdom', 2000) on conflict do nothing;
insert into cp.carrier (code, name, country, mcc, mnc, currency, timezone, regulation_code, spec)
values ('c1', 'C1', 'GB', '234', '10', 'GBP', 'Europe/London', 't', '{}');
insert into cp.subscriber (msisdn, carrier_id) values ('+447700900123', (select carrier_id from cp.carrier));
insert into cp.procedure (kind, subscriber_id, carrier_id, amount_minor, currency, created_at, updated_at)
select 'charge', s.subscriber_id, s.carrier_id, 499, 'GBP', now(), now() from cp.subscriber s;
insert into cp.procedure (kind, subscriber_id, carrier_id, amount_minor, currency, created_at, updated_at, parent_id)
select 'refund', p.subscriber_id, p.carrier_id, 499, 'GBP', now(), now(), p.procedure_id from cp.procedure p;
insert into cp.carrier_call (call_id, procedure_id, carrier_id, operation, safe_to_repeat, correlator, created_at)
overriding system value
select n.id, procedure_id, carrier_id, 'charge', false, 'cp-' || n.id, now()
from cp.procedure, (select nextval(pg_get_serial_sequence('cp.carrier_call', 'call_id')) as id) n
where kind = 'charge';
-- The setup rows' own trigger events are not part of these scenarios.
delete from cp.event;

select ok((select bool_and(cp.history_bucket('procedure', g) between 0 and 63) from generate_series(1, 1000) g),
          'buckets are 0..63');
select is(cp.history_bucket('procedure', 7), cp.history_bucket('procedure', 7), 'a bucket is stable');
select is(cp.jsonb_bigint('{"a": "x1"}', 'a'), null, 'a non-integer payload member is null, not an error');

select is((select (c.procedure_id, c.payment_id, c.subscriber_id)::text
             from cp.history_correlation('carrier_call', (select call_id from cp.carrier_call), '{}') c),
          (select (p.procedure_id, p.procedure_id, p.subscriber_id)::text from cp.procedure p where kind = 'charge'),
          'a carrier call is correlated to its procedure and subscriber through the call row');
select is((select c.payment_id
             from cp.history_correlation('procedure', (select procedure_id from cp.procedure where kind = 'refund'),
                                         '{}') c),
          (select procedure_id from cp.procedure where kind = 'charge'),
          'a refund belongs to the payment it refunds');
select is((select c.subscriber_id from cp.history_correlation('subscriber', 42, '{}') c), 42::bigint,
          'a subscriber aggregate is its own subscriber');

insert into cp.event (aggregate_type, aggregate_id, kind, occurred_at, payload)
select 'procedure', procedure_id, k, now(), '{}' from cp.procedure, unnest(array['created', 'status_changed']) k
 where kind = 'charge';
insert into cp.carrier_log (call_id, procedure_id, carrier_id, operation, outcome)
select call_id, procedure_id, carrier_id, 'charge', 'succeeded' from cp.carrier_call;

select is((select unshipped from report.history_lag where outbox = 'event'), 2::bigint, 'the lag view counts events');
select is((select unshipped from report.history_lag where outbox = 'carrier_log'), 1::bigint,
          'and carrier log rows');

create temp table claimed_events as select * from adapter.claim_history_events(1);
create temp table claimed_logs as select * from adapter.claim_carrier_logs(10);
select is((select count(*) from claimed_events), 1::bigint, 'a claim respects its limit');
select is((select kind from claimed_events), 'created', 'and takes an aggregate''s oldest row first');
select is((select payment_id from claimed_logs), (select procedure_id from cp.procedure where kind = 'charge'),
          'claimed log rows carry their correlation');

select adapter.complete_history_batch('tap', array(select event_id from claimed_events),
                                      array(select log_id from claimed_logs));
select is((select count(*) from cp.event), 1::bigint, 'completion deletes exactly the shipped events');
select is((select (events_shipped, logs_shipped, batches)::text from cp.history_shipper where shipper = 'tap'),
          '(1,1,1)', 'and counts them for the shipper');
select isnt((select last_shipped_at from report.history_lag limit 1), null, 'the lag view shows the last shipment');

-- A scrape reads the lag: a backlog is counted exactly up to 10,000 rows, then bounded by its ids' span.
select is((select unshipped_exact from report.history_lag where outbox = 'event'), true, 'a small backlog is exact');
insert into cp.event (aggregate_type, aggregate_id, kind, occurred_at, payload)
select 'procedure', 1, 'bulk', now(), '{}' from generate_series(1, 10001);
delete from cp.event where event_id = (select min(event_id) + 5 from cp.event);  -- shipped out of order
select is((select (unshipped, oldest_id, unshipped_exact)::text from report.history_lag where outbox = 'event'),
          (select (max(event_id) - min(event_id) + 1, min(event_id), false)::text from cp.event),
          'past 10,000 rows the backlog is the span of its ids, flagged as a bound');
select ok((select unshipped from report.history_lag where outbox = 'event') >= (select count(*) from cp.event),
          'never below the rows waiting');

select * from finish();
rollback;
