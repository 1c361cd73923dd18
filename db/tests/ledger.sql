-- Ledger rules: journals balance (checked at commit by a deferred constraint trigger), journals and
-- entries are immutable, and the split of a charge adds up.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(16);

create temp table pay as select (api.charge('acme', '+2348020000001', 'gems', 'c1')->>'id')::bigint as id;
select pg_temp.claim('test_ng');
select pg_temp.settle((select id from pay), 'succeeded');
select is((select count(*)::int from cp.journal), 1, 'the charge posted one journal');
select is((select sum(amount_minor) from cp.ledger_entry)::bigint, 0::bigint, 'which balances');
select is((select sum(amount_minor) from cp.ledger_entry where amount_minor > 0)::bigint, 20000::bigint,
          'debits: the carrier owes the gross');
select is((select array_agg(a.kind::text || ':' || e.amount_minor order by e.entry_id)
           from cp.ledger_entry e join cp.ledger_account a using (account_id)),
          array['carrier_receivable:20000', 'tax_payable:-1395', 'carrier_share:-7442', 'platform_revenue:-1116',
                'merchant_payable:-10047'], 'the split: VAT inside the price, carrier share, platform fee, merchant');
select is((select row(s.*)::text from cp.split_amount(20000, 750, 4000, 1000) s), '(1395,7442,1116,10047)',
          'cp.split_amount gives the same parts');
select is((select tax + carrier_share + platform_fee + merchant_net from cp.split_amount(999, 2000, 3333, 777)),
          999::bigint, 'the parts always add up to the gross (rounding goes to the merchant)');

-- An unbalanced journal is refused when the deferred check runs (here forced with SET CONSTRAINTS,
-- inside a block so the failed insert is rolled back).
select throws_ok($$
    do $x$
    declare v_j bigint;
    begin
        insert into cp.journal (procedure_id, kind, currency, posted_at)
        values ((select id from pay), 'charge', 'NGN', now()) returning journal_id into v_j;
        insert into cp.ledger_entry (journal_id, account_id, amount_minor)
        values (v_j, (select min(account_id) from cp.ledger_account), 100);
        set constraints all immediate;
    end $x$ $$, 'CP061', null, 'an unbalanced journal raises CP061 at the deferred check');
select lives_ok($$
    do $x$
    declare v_j bigint;
    begin
        insert into cp.journal (procedure_id, kind, currency, posted_at)
        values ((select id from pay), 'charge', 'NGN', now()) returning journal_id into v_j;
        insert into cp.ledger_entry (journal_id, account_id, amount_minor)
        values (v_j, (select min(account_id) from cp.ledger_account), 100);
        -- unbalanced for a moment: allowed, the check is deferred
        insert into cp.ledger_entry (journal_id, account_id, amount_minor)
        values (v_j, (select max(account_id) from cp.ledger_account), -100);
        set constraints all immediate;
        raise exception using errcode = 'CPZZZ', message = 'undo';
    exception when sqlstate 'CPZZZ' then null;
    end $x$ $$, 'a journal may be unbalanced mid-transaction as long as it balances at the check');
select is((select count(*)::int from cp.journal), 1, 'the failed postings left nothing behind');

-- Immutability: updates, deletes and truncates of entries and journals raise CP062.
-- (Run the pending balance checks first: TRUNCATE refuses tables with pending trigger events.)
set constraints all immediate;
select throws_ok($$ update cp.ledger_entry set amount_minor = amount_minor + 1 $$, 'CP062', null,
                 'entries cannot be updated');
select throws_ok($$ delete from cp.ledger_entry $$, 'CP062', null, 'entries cannot be deleted');
select throws_ok($$ truncate cp.ledger_entry $$, 'CP062', null, 'entries cannot be truncated');
select throws_ok($$ update cp.journal set posted_at = posted_at + interval '1 day' $$, 'CP062', null,
                 'journals cannot be updated');
select throws_ok($$ delete from cp.journal $$, 'CP062', null, 'journals cannot be deleted');
select throws_ok($$ truncate cp.journal cascade $$, 'CP062', null, 'journals cannot be truncated');
select is((select count(*)::int from cp.ledger_entry), 5, 'the entries are all still there');

select * from finish();
rollback;
