-- The merchant's webhooks beyond payments: refund.failed, subscription activated, renewed, stepped_down,
-- suspended and resumed, each once, for the transition that means it.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(9);

create function pg_temp.kinds() returns text
language sql as $$
    select coalesce(string_agg(kind, ',' order by notification_id), '') from cp.merchant_notification
     where kind not like 'payment.%'
$$;
create function pg_temp.renew(p_outcome text, p_reason text default null) returns void
language plpgsql as $$
begin
    perform admin.set_clock((select next_charge_at + interval '1 minute' from cp.subscription));
    perform sched.run_due(100);
    perform pg_temp.claim('test_ng');
    perform pg_temp.settle((select max(procedure_id) from cp.procedure where kind = 'charge'), p_outcome, p_reason);
end
$$;

create temp table sub as select api.subscribe('acme', '+2348020000001', 'club', 'daily', 's1') as d;
select api.confirm_optin('acme', (select (d->>'optin_id')::bigint from sub), pg_temp.pin('+2348020000001'));
select is(pg_temp.kinds(), 'subscription.activated', 'confirming the opt-in notifies the activation');
select pg_temp.claim('test_ng');
select pg_temp.settle((select max(procedure_id) from cp.procedure where kind = 'charge'), 'succeeded');
select is(pg_temp.kinds(), 'subscription.activated', 'the first period paid is no renewal');

select pg_temp.renew('succeeded');
select is(pg_temp.kinds(), 'subscription.activated,subscription.renewed', 'the next period paid is a renewal');
select is((select payload->>'amount_minor' || '/' || (payload->>'plan_amount_minor') from cp.merchant_notification
            where kind = 'subscription.renewed'), '10000/10000', 'naming what it was paid and the plan''s price');

-- Unpaid at full price, then paid at the lower price point: renewed and stepped down.
select pg_temp.renew('failed', 'insufficient_funds');
select pg_temp.renew('succeeded');
select is((select string_agg(kind || ':' || (payload->>'amount_minor'), ',' order by kind)
             from cp.merchant_notification where kind in ('subscription.renewed', 'subscription.stepped_down')
              and (payload->>'amount_minor')::bigint < 10000),
          'subscription.renewed:5000,subscription.stepped_down:5000', 'a renewal at a lower price is stepped down');

-- Suspended (through the legal path), then paid again: suspended, then resumed.
update cp.subscription set status = 'retrying';
update cp.subscription set status = 'grace';
update cp.subscription set status = 'suspended';
select is((select count(*)::int from cp.merchant_notification where kind = 'subscription.suspended'), 1,
          'suspension is notified once');
select pg_temp.renew('succeeded');
select is((select count(*)::int from cp.merchant_notification where kind = 'subscription.resumed'), 1,
          'paid again after a suspension: resumed');

-- A refund the carrier refuses.
select pg_temp.settle((select procedure_id from (select (api.charge('acme', '+2348020000002', 'gems', 'k1'))->>'id'
                                                         as procedure_id) c)::bigint, 'succeeded');
select api.refund('acme', (select max(procedure_id) from cp.procedure where kind = 'charge'), 'r1', null, 'test');
select pg_temp.claim('test_ng');
select pg_temp.settle((select max(procedure_id) from cp.procedure where kind = 'refund'), 'failed', 'rejected');
select is((select payload->>'status' from cp.merchant_notification where kind = 'refund.failed'), 'failed',
          'a refund that failed is notified');
select is((select count(*)::int from cp.merchant_notification where kind = 'refund.failed'), 1, 'once');

select * from finish();
rollback;
