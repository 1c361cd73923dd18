-- api.refund (full, partial, limits), api.payment and api.check_balance.
\set QUIET on
begin;
\ir fixtures/world.sql
\ir fixtures/collected_payment.sql
select plan(43);

-- A collected NG payment of 20000 NGN.
create temp table pay as select pg_temp.pay('c1') as id;

-- Partial refund: queued as its own procedure, settled by the carrier's refund call.
create temp table r1 as select api.refund('acme', (select id from pay), 'r1', 5000, 'goodwill') as d;
select is((select d->>'status' from r1), 'pending', 'partial refund is pending');
select is((select d->>'payment_id' from r1), (select id::text from pay), 'it names the payment');
select is((select d->>'kind' || ' ' || (d->>'amount_minor') from r1), 'refund 5000', 'a refund of 5000');
select is((select params->'original'->>'correlator' from cp.carrier_call where operation = 'refund'),
          (select correlator from cp.carrier_call where operation = 'charge'),
          'the refund call names the original charge''s correlator');
select is(api.refund('acme', (select id from pay), 'r1', 5000, 'goodwill'), (select d from r1),
          'a repeated refund returns the first result');
select is((select count(*)::int from cp.procedure where kind = 'refund'), 1, 'and makes no second refund');
select throws_ok(format($$ select api.refund('acme', %s, 'r2', 15001) $$, (select id from pay)), 'CP041', null,
                 'in-flight refunds count: 15001 more would exceed what was collected');
select pg_temp.claim('test_ng');
select pg_temp.settle((select (d->>'id')::bigint from r1), 'succeeded');
select is((select status::text || ' ' || refunded_minor from cp.procedure where procedure_id = (select id from pay)),
          'partially_refunded 5000', 'the payment is partially refunded');
select is((select sum(e.amount_minor) from cp.ledger_entry e join cp.journal j using (journal_id)
           where j.kind = 'refund')::bigint, 0::bigint, 'the refund journal balances');
select is((select count(*)::int from cp.journal), 2, 'a compensating journal, the charge journal untouched');
select is((select -sum(e.amount_minor) from cp.ledger_entry e join cp.ledger_account a using (account_id)
           where a.kind = 'merchant_payable')::bigint,
          -- a quarter of each line goes back: tax 349, carrier 1861, fee 279, merchant 2512 (5001);
          -- the rounding unit is settled on the merchant's line, so 2511 of its 10047 goes back
          7536::bigint, 'merchant payable reduced in proportion, rounding on the merchant');
select is((select revoked_at from cp.entitlement), null, 'a partial refund keeps the entitlement');

select throws_ok(format($$ select api.refund('acme', %s, 'r3', 15001) $$, (select id from pay)), 'CP041', null,
                 'refund above what remains');
select throws_ok(format($$ select api.refund('acme', %s, 'r4', 0) $$, (select id from pay)), 'CP006', null,
                 'refund of zero');
select throws_ok(format($$ select api.refund('other', %s, 'r5') $$, (select id from pay)), 'CP040', null,
                 'another merchant''s payment id is not found');
select throws_ok($$ select api.refund('acme', 999999, 'r6') $$, 'CP040', null, 'unknown payment');

-- Full refund of the rest (amount defaults to what remains).
create temp table r2 as select api.refund('acme', (select id from pay), 'r7') as d;
select is((select (d->>'amount_minor')::bigint from r2), 15000::bigint, 'the default amount is what remains');
select pg_temp.claim('test_ng');
select pg_temp.settle((select (d->>'id')::bigint from r2), 'succeeded');
select is((select status::text || ' ' || refunded_minor from cp.procedure where procedure_id = (select id from pay)),
          'refunded 20000', 'the payment is fully refunded');
select is((select count(*)::int from cp.journal where kind = 'refund'), 2, 'one journal per refund');
select ok((select bool_and(s = 0) from (select sum(amount_minor) s from cp.ledger_entry group by account_id) t),
          'each account is back to zero');
select isnt((select revoked_at from cp.entitlement), null, 'a full refund revokes the entitlement');
select throws_ok(format($$ select api.refund('acme', %s, 'r8', 1) $$, (select id from pay)), 'CP043', null,
                 'nothing left to refund on a refunded payment');

-- A failed refund call does not count against the payment.
create temp table pay2 as select (api.charge('acme', '+2348020000002', 'gems', 'c2')->>'id')::bigint as id;
select pg_temp.claim('test_ng');
select pg_temp.settle((select id from pay2), 'succeeded');
select pg_temp.settle(((api.refund('acme', (select id from pay2), 'r9'))->>'id')::bigint, 'failed', 'rejected');
select is((select status::text || ' ' || refunded_minor from cp.procedure where procedure_id = (select id from pay2)),
          'succeeded 0', 'a refused refund changes nothing on the payment');
select is((api.refund('acme', (select id from pay2), 'r10'))->>'amount_minor', '20000',
          'the whole amount can be asked for again');

-- Refund window: 30 days on NG by default.
select admin.advance_clock(interval '31 days');
create temp table pay3 as select (api.charge('acme', '+2348020000003', 'gems', 'c3')->>'id')::bigint as id;
select pg_temp.claim('test_ng');
select pg_temp.settle((select id from pay3), 'succeeded');
select throws_ok(format($$ select api.refund('acme', %s, 'r11', 100) $$, (select id from pay)), 'CP043', null,
                 'old refunded payment still reports that it is refunded');
select lives_ok(format($$ select api.refund('acme', %s, 'r12', 100) $$, (select id from pay3)),
                'a fresh payment can be refunded');
select admin.advance_clock(interval '31 days');
select throws_ok(format($$ select api.refund('acme', %s, 'r13', 100) $$, (select id from pay3)), 'CP042', null,
                 'refund outside the window');

-- A failed payment cannot be refunded.
create temp table pay4 as select (api.charge('acme', '+2348020000004', 'gems', 'c4')->>'id')::bigint as id;
select pg_temp.claim('test_ng');
select pg_temp.settle((select id from pay4), 'failed', 'insufficient_funds');
select throws_ok(format($$ select api.refund('acme', %s, 'r14') $$, (select id from pay4)), 'CP043', null,
                 'refund of a failed payment');

-- api.payment: status, amounts, attempts, refunds and history.
create temp table p as select api.payment('acme', (select id from pay)) as d;
select is((select d->>'status' || ' ' || (d->>'collected_minor') || ' ' || (d->>'refunded_minor') from p),
          'refunded 20000 20000', 'api.payment: status and amounts');
select is((select jsonb_array_length(d->'attempts') from p), 1, 'one carrier attempt');
select is((select d->'attempts'->0->>'outcome' from p), 'succeeded', 'its outcome');
select is((select jsonb_path_query_array(d->'refunds', '$[*].amount_minor') from p), '[5000, 15000]'::jsonb,
          'its refunds');
select is((select jsonb_path_query_array(d->'history', '$[*].to') from p),
          '["pending", "in_flight", "succeeded", "partially_refunded", "refunded"]'::jsonb, 'its history');
select throws_ok(format($$ select api.payment('other', %s) $$, (select id from pay)), 'CP040', null,
                 'api.payment of another merchant''s payment');

-- api.check_balance: a balance call; the answer shows in api.payment.
create temp table b as select api.check_balance('acme', '+447700900001', 300, 'bal-1') as d;
select is((select d->>'kind' || ' ' || (d->>'status') from b), 'balance_check pending', 'balance check queued');
select pg_temp.claim('test_gb');
select pg_temp.settle((select (d->>'id')::bigint from b), 'succeeded', null, '{"balance_minor": 250}');
select is((api.payment('acme', (select (d->>'id')::bigint from b)))->'result',
          '{"balance_minor": 250, "sufficient": false}'::jsonb, 'the balance and whether it covers the amount');
select throws_ok($$ select api.check_balance('acme', '+447700900001', 0, 'bal-2') $$, 'CP006', null, 'balance for zero');
select is((api.check_balance('acme', '+447700900001', 300, 'bal-1'))->>'id', (select d->>'id' from b),
          'a balance check repeated with its key returns the first one');
select is((select count(*)::int from cp.procedure where kind = 'balance_check'), 1, 'and queues no second carrier call');
select throws_ok($$ select api.check_balance('acme', '+447700900001', 500, 'bal-1') $$, 'CP010', null,
                 'the same key with another amount');
select throws_ok($$ select api.check_balance('acme', '+447700900001', 300, null) $$, 'CP080', null,
                 'a balance check without a key');
select is((select count(*)::int from pg_catalog.pg_proc where oid::regprocedure::text like 'api.check_balance(%'), 1,
          'only the signature with a key exists');
select throws_ok(format($$ select api.refund('acme', %s, 'r-long', 1, repeat('x', 501)) $$, (select id from pay)),
                 'CP080', null, 'a refund reason over 500 characters');

select * from finish();
rollback;
