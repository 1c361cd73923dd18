-- The status timeline of api.payment and api.subscription stays complete after the history shipper ran.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(5);

create temp table sub as select api.subscribe('acme', '+2348020000001', 'club', 'daily', 's1') as d;
select api.confirm_optin('acme', (select (d->>'optin_id')::bigint from sub), pg_temp.pin('+2348020000001'));
select pg_temp.claim('test_ng');
select pg_temp.settle((select procedure_id from cp.procedure where kind = 'charge'), 'succeeded');
create temp table ids as
select (select procedure_id from cp.procedure where kind = 'charge') as payment_id,
       (select (d->>'id')::bigint from sub) as subscription_id;
create temp table before as
select api.payment('acme', (select payment_id from ids))->'history' as payment,
       api.subscription('acme', (select subscription_id from ids))->'history' as subscription;
select ok((select jsonb_array_length(payment) >= 3 and jsonb_array_length(subscription) >= 2 from before),
          'before shipping, both timelines hold the status changes');

-- Ship part of the outbox, then the rest (what `carrierpay history ship` does, batch by batch).
select adapter.complete_history_batch('tap', array(select event_id from adapter.claim_history_events(3)), '{}');
select is(api.payment('acme', (select payment_id from ids))->'history', (select payment from before),
          'half shipped: the payment timeline is unchanged');
select adapter.complete_history_batch('tap', array(select event_id from adapter.claim_history_events(100000)),
                                      '{}');
select is((select count(*)::int from cp.event), 0, 'every event left the outbox');
select is(api.payment('acme', (select payment_id from ids))->'history', (select payment from before),
          'all shipped: the payment timeline is complete');
select is(api.subscription('acme', (select subscription_id from ids))->'history', (select subscription from before),
          'and so is the subscription''s');

select * from finish();
rollback;
