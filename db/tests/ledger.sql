-- Ledger rules: a journal has at least two entries, balances per currency in its own currency
-- (checked at commit, once per journal, by a deferred constraint trigger on cp.journal), takes entries
-- only from the transaction that posts it; journals and entries are immutable; the split of a charge
-- adds up.
\set QUIET on
begin;
\ir fixtures/world.sql
\ir fixtures/collected_payment.sql
select plan(26);

create temp table pay as select pg_temp.pay('c1') as id;
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

-- A posting that breaks a rule is refused when the deferred check runs (here forced with SET
-- CONSTRAINTS inside a block, so the failed insert is rolled back). pg_temp.post writes a journal
-- and its entries as separate statements, as a careless writer would.
create function pg_temp.post(p_currency text, p_accounts integer[], p_amounts bigint[]) returns bigint
language plpgsql as $x$
declare v_j bigint;
begin
    insert into cp.journal (procedure_id, kind, currency, posted_at)
    values ((select id from pay), 'charge', p_currency, now()) returning journal_id into v_j;
    for i in 1 .. coalesce(array_length(p_accounts, 1), 0) loop
        insert into cp.ledger_entry (journal_id, account_id, amount_minor) values (v_j, p_accounts[i], p_amounts[i]);
    end loop;
    return v_j;
end $x$;
create temp table acct as
select cp.ledger_account_id('platform_revenue', 'NGN') as ngn_a, cp.ledger_account_id('tax_payable', 'NGN',
       p_country => 'NG') as ngn_b,
       cp.ledger_account_id('platform_revenue', 'GBP') as gbp_a, cp.ledger_account_id('tax_payable', 'GBP',
       p_country => 'GB') as gbp_b;

select throws_ok($$ do $x$ begin
        perform pg_temp.post('NGN', array[(select ngn_a from acct), (select ngn_b from acct)], array[100, -99]);
        set constraints all immediate;
    end $x$ $$, 'CP061', null, 'an unbalanced journal raises CP061 at the deferred check');
select throws_ok($$ do $x$ begin
        perform pg_temp.post('NGN', array[(select ngn_a from acct), (select gbp_a from acct)], array[100, -100]);
        set constraints all immediate;
    end $x$ $$, 'CP061', null, '+100 NGN against -100 GBP does not balance: the sum is per currency');
select throws_ok($$ do $x$ begin
        perform pg_temp.post('NGN', array[(select gbp_a from acct), (select gbp_b from acct)], array[100, -100]);
        set constraints all immediate;
    end $x$ $$, 'CP067', null, 'a balanced journal on accounts of another currency than its own raises CP067');
select throws_ok($$ do $x$ begin
        perform pg_temp.post('NGN', array[]::integer[], array[]::bigint[]);
        set constraints all immediate;
    end $x$ $$, 'CP065', null, 'an empty journal raises CP065');
select throws_ok($$ do $x$ begin
        perform pg_temp.post('NGN', array[(select ngn_a from acct)], array[100]);
        set constraints all immediate;
    end $x$ $$, 'CP065', null, 'a journal of one entry raises CP065');
select lives_ok($$ do $x$ begin
        perform pg_temp.post('NGN', array[(select ngn_a from acct), (select ngn_b from acct), (select ngn_a from acct)],
                             array[100, -150, 50]);
        set constraints all immediate;
        raise exception using errcode = 'CPZZZ', message = 'undo';
    exception when sqlstate 'CPZZZ' then null;
    end $x$ $$, 'three entries that balance are a journal');
select lives_ok($$
    do $x$
    declare v_j bigint;
    begin
        insert into cp.journal (procedure_id, kind, currency, posted_at)
        values ((select id from pay), 'charge', 'NGN', now()) returning journal_id into v_j;
        insert into cp.ledger_entry (journal_id, account_id, amount_minor)
        values (v_j, (select ngn_a from acct), 100);
        -- unbalanced for a moment: allowed, the check is deferred
        insert into cp.ledger_entry (journal_id, account_id, amount_minor)
        values (v_j, (select ngn_b from acct), -100);
        set constraints all immediate;
        raise exception using errcode = 'CPZZZ', message = 'undo';
    exception when sqlstate 'CPZZZ' then null;
    end $x$ $$, 'a journal may be unbalanced mid-transaction as long as it balances at the check');

-- A journal is closed to any transaction but the one that posted it (this file is one transaction,
-- so another's journal is simulated by its transaction id; tests/security checks it across commits).
select throws_ok($$
    with j as (insert into cp.journal (procedure_id, kind, currency, posted_at, xact_id)
               values ((select id from pay), 'charge', 'NGN', now(), '3'::xid8) returning journal_id)
    insert into cp.ledger_entry (journal_id, account_id, amount_minor)
    select journal_id, a, m from j, unnest(array[(select ngn_a from acct), (select ngn_b from acct)],
                                           array[100, -100]) as t(a, m) $$,
    'CP066', null, 'entries cannot go into a journal posted by another transaction, even balanced');
-- Once its check has run (SET CONSTRAINTS ... IMMEDIATE), the charge journal is checked again at once
-- on any entry added to it in the same transaction.
set constraints all immediate;
select throws_ok($$ insert into cp.ledger_entry (journal_id, account_id, amount_minor)
                    values ((select min(journal_id) from cp.journal), (select ngn_a from acct), 100) $$,
                 'CP061', null, 'an entry slipped into a checked journal is checked at once');
set constraints all deferred;
select is((select count(*)::int from cp.journal), 1, 'the failed postings left nothing behind');

-- A charge that collected nothing moved no money: no journal (one would have no entries).
create temp table free as select (api.charge('acme', '+2348020000002', 'gems', 'c2')->>'id')::bigint as id;
select pg_temp.claim('test_ng');
select pg_temp.settle((select id from free), 'succeeded', null, '{"amount_minor": 0}');
select is((select status::text || ':' || collected_minor || ':' ||
                  (select count(*) from cp.journal j where j.procedure_id = p.procedure_id)
           from cp.procedure p where procedure_id = (select id from free)), 'succeeded:0:0',
          'a charge answered succeeded for 0 posts no journal');

-- The checks cost one query per journal at commit, and one per statement that inserts entries: no
-- row-level trigger runs per entry.
select is((select count(*)::int from pg_catalog.pg_trigger
           where tgrelid = 'cp.ledger_entry'::regclass and not tgisinternal
             and (tgtype & 1) = 1 and (tgtype & 4) = 4), 0, 'no per-entry insert trigger on cp.ledger_entry');
select is((select count(*)::int from pg_catalog.pg_trigger
           where tgrelid = 'cp.journal'::regclass and tgname = '_200_balanced' and tgdeferrable and tginitdeferred),
          1, 'the journal check is a deferred constraint trigger on cp.journal, one per journal');

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
