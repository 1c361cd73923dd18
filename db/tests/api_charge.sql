-- api.charge: a one-time purchase from request to ledger, and its bad inputs.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(24);

-- NG needs no opt-in for one-time purchases; the charge is queued for the carrier.
select is((api.charge('acme', '+2348020000001', 'gems', 'k1'))->>'status', 'pending', 'charge is pending');
select is((select count(*)::int from cp.call_queue), 1, 'one carrier call queued');
select is((select operation from cp.carrier_call), 'charge', 'the call is a charge');
select is((api.charge('acme', '+2348020000001', 'gems', 'k1'))->>'id',
          (select procedure_id::text from cp.procedure), 'same key returns the first result');
select is((select count(*)::int from cp.procedure), 1, 'the repeat made no second procedure');
select throws_ok($$ select api.charge('acme', '+2348020000001', 'gems', 'k1', 999999) $$, 'CP010', null,
                 'same key with other parameters is refused');

select is((select count(*)::int from pg_temp.claim('test_ng')), 1, 'adapter claims the call');
select is((select status::text from cp.procedure), 'in_flight', 'claim moves the procedure in flight');
select pg_temp.settle((select procedure_id from cp.procedure), 'succeeded');
select is((select status::text from cp.procedure), 'succeeded', 'success settles the procedure');
select is((select collected_minor from cp.procedure), 20000::bigint, 'amount collected');
select is((select sum(amount_minor) from cp.ledger_entry)::bigint, 0::bigint, 'the journal balances');
select is((select -sum(e.amount_minor) from cp.ledger_entry e join cp.ledger_account a using (account_id)
           where a.kind = 'merchant_payable')::bigint,
          -- 20000 gross, 7.5% VAT inside: 1395 tax; 18605 net; 40% carrier 7442; 10% of the rest fee 1116
          10047::bigint, 'merchant payable is gross minus tax, carrier share and platform fee');
select is((select variant from cp.entitlement), 'gems_100', 'the paid variant is delivered');
select is((select count(*)::int from cp.merchant_notification where kind = 'payment.succeeded'), 1,
          'merchant notified');

-- Bad inputs: each its own code, nothing written.
select throws_ok($$ select api.charge('nobody', '+2348020000001', 'gems', 'b1') $$, 'CP001', null, 'unknown merchant');
select throws_ok($$ select api.charge('acme', '+2348020000001', 'nothing', 'b2') $$, 'CP003', null, 'unknown product');
select throws_ok($$ select api.charge('acme', '2348020000001', 'gems', 'b3') $$, 'CP005', null, 'malformed MSISDN');
select throws_ok($$ select api.charge('acme', '+15550000001', 'gems', 'b4') $$, 'CP004', null, 'no carrier serves it');
select throws_ok($$ select api.charge('acme', '+2348020000001', 'gems', 'b5', 0) $$, 'CP006', null, 'amount zero');
select throws_ok($$ select api.charge('acme', '+2348020000001', 'gems', 'b6', 123) $$, 'CP006', null,
                 'amount not a price point');
select throws_ok($$ select api.charge('acme', '+447700900001', 'gems', 'b7') $$, 'CP024', null,
                 'GB one-time purchase without opt-in');
select throws_ok($$ select api.charge('acme', '+2348020000001', 'gems', null) $$, 'CP080', null, 'no idempotency key');
select is((select count(*)::int from cp.procedure), 1, 'rejected calls left no procedure');
select is((select count(*)::int from cp.idempotency), 1, 'rejected calls left no idempotency record');

select * from finish();
rollback;
