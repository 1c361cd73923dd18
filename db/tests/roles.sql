-- The role model: a merchant's role acts only for its merchant, through the api schema only;
-- adapters use the adapter schema only.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(16);
create role cp_test_adapter in role carrierpay_adapter;
create temp table pay as select (api.charge('other', '+2348020000001', 'coins', 'c0')->>'id')::bigint as id;
-- pgTAP keeps its bookkeeping in temporary tables of this session; let the switched roles write it.
grant all on all tables in schema pg_temp to public;
grant all on all sequences in schema pg_temp to public;

set session authorization cp_merchant_acme;
select is(session_user::text, 'cp_merchant_acme', 'acting as the merchant role');
select is((api.charge('acme', '+2348020000002', 'gems', 'k1'))->>'status', 'pending',
          'a merchant role can charge for itself');
select throws_ok($$ select api.charge('other', '+2348020000002', 'coins', 'k2') $$, 'CP002', null,
                 'but not for another merchant');
select throws_ok(format($$ select api.payment('other', %s) $$, (select id from pay)), 'CP002', null,
                 'nor read another merchant''s payment');
select throws_ok(format($$ select api.payment('acme', %s) $$, (select id from pay)), 'CP040', null,
                 'and another merchant''s payment is not found under its own name');
select throws_ok($$ select count(*) from cp.procedure $$, '42501', null, 'cannot select cp tables');
select throws_ok($$ update cp.merchant set platform_fee_bp = 0 $$, '42501', null, 'cannot update cp tables');
select throws_ok($$ select adapter.claim_calls('test_ng', 10, '1 minute', 'x') $$, '42501', null,
                 'cannot claim carrier calls');
select throws_ok($$ select adapter.complete_calls('[]') $$, '42501', null, 'cannot complete carrier calls');
select throws_ok($$ select admin.add_merchant('evil', 'Evil') $$, '42501', null, 'cannot onboard');
select throws_ok($$ select admin.advance_clock('1 day') $$, '42501', null, 'cannot move the clock');
reset session authorization;

set session authorization cp_test_adapter;
select is((select count(*)::int from adapter.claim_calls('test_ng', 10, '1 minute', 'w1')), 2,
          'an adapter claims calls');
select throws_ok($$ select api.charge('acme', '+2348020000003', 'gems', 'k3') $$, '42501', null,
                 'an adapter cannot call the merchant API');
select throws_ok($$ select api.payment('acme', 1) $$, '42501', null, 'nor read payments through it');
select throws_ok($$ select count(*) from cp.carrier_call $$, '42501', null, 'nor read cp tables directly');
reset session authorization;

select is(session_user::text, current_user::text, 'back to the owner');

select * from finish();
rollback;
