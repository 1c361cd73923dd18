-- The payment path's references without foreign keys: parents are never deleted, entries need their
-- journal and account, no reference dangles; one charge per subscription period (holds_period); the
-- carrier budget's slots.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(14);

create temp table paid as select (api.charge('acme', '+2348020000123', 'gems', 'ref-1'))->>'id' as id;
select pg_temp.claim('test_ng');
select pg_temp.settle((select id::bigint from paid), 'succeeded');
select is((select status::text from cp.procedure where procedure_id = (select id::bigint from paid)), 'succeeded',
          'a payment settled through the lean path');
select is((select count(*)::int from report.dangling_references), 0, 'no reference dangles');

select throws_ok($$ delete from cp.merchant where code = 'acme' $$, 'CP150', null, 'a merchant is never deleted');
select throws_ok($$ delete from cp.carrier where code = 'test_gb' $$, 'CP150', null, 'nor a carrier');
select throws_ok($$ delete from cp.procedure $$, 'CP150', null, 'nor a procedure');
select throws_ok($$ delete from cp.carrier_call $$, 'CP150', null, 'nor a carrier call');
select throws_ok($$ truncate cp.subscriber cascade $$, 'CP150', null, 'nor are subscribers truncated');
select throws_ok($$ insert into cp.ledger_entry (journal_id, account_id, amount_minor)
                    values (-1, (select min(account_id) from cp.ledger_account), 5) $$,
                 'CP066', null, 'an entry needs an existing journal');

-- One charge per period: a second one for the same period is refused while the first may succeed,
-- and allowed once it failed.
create temp table sub as select api.subscribe('acme', '+2348020000555', 'club', 'daily', 'sub-1') as d;
select api.confirm_optin('acme', (select (d->>'optin_id')::bigint from sub), pg_temp.pin('+2348020000555'));
create temp table first_charge as
    select procedure_id, subscription_id, period_index from cp.procedure where subscription_id is not null;
select is((select holds_period from cp.procedure where procedure_id = (select procedure_id from first_charge)), true,
          'a subscription charge holds its period');
-- Another charge of the first charge's period that holds it, inserted directly as the owner.
create function pg_temp.charge_period_again() returns void language sql as $$
    insert into cp.procedure (kind, merchant_id, subscriber_id, carrier_id, subscription_id,
                              period_index, amount_minor, currency, created_at, updated_at, holds_period)
    select 'charge', merchant_id, subscriber_id, carrier_id, subscription_id, period_index,
           amount_minor, currency, created_at, updated_at, true
    from cp.procedure where procedure_id = (select procedure_id from first_charge)
$$;
select throws_ok($$ select pg_temp.charge_period_again() $$, '23505', null,
                 'a second charge for the same period is refused');
select pg_temp.claim('test_ng');
select pg_temp.settle((select procedure_id from first_charge), 'failed', 'insufficient_funds');
select is((select holds_period from cp.procedure where procedure_id = (select procedure_id from first_charge)), null,
          'a failed charge leaves its period');
select lives_ok($$ select pg_temp.charge_period_again() $$, 'so the next attempt may take it');

-- The budget is split in slots; together they grant the carrier's tps in a second, never more.
update cp.carrier set tps = 200 where code = 'test_gb';
select is(cp.take_budget((select carrier_id from cp.carrier where code = 'test_gb'), 500), 200,
          'all slots together grant the tps');
select is((select count(*)::int from cp.carrier_budget
           where carrier_id = (select carrier_id from cp.carrier where code = 'test_gb')), 8,
          'in eight slots');

select * from finish();
rollback;
