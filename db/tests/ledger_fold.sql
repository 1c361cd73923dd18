-- The ledger fold (sched.fold_ledger): balances and the journal check folded past a journal-id
-- watermark; the ledger views (report.ledger_balances, report.unbalanced_journals) read the fold plus
-- the journals past it and equal the full sums at any time; ids passed before they were visible are
-- remembered with the transactions that may still post them; report.ledger_audit re-checks the long way.
\set QUIET on
begin;
\ir fixtures/world.sql
\ir fixtures/collected_payment.sql
select plan(17);

-- The full sums the views must equal: every entry of every account, every journal not summing to zero.
create function pg_temp.scanned_balances() returns text language sql as $$
    select string_agg(format('%s=%s', a.account_id, coalesce(s.total, 0)), ',' order by a.account_id)
    from cp.ledger_account a
    left join (select account_id, sum(amount_minor) as total from cp.ledger_entry group by account_id) s
      using (account_id)
$$;
create function pg_temp.reported_balances() returns text language sql as $$
    select string_agg(format('%s=%s', a.account_id, r.balance_minor), ',' order by a.account_id)
    from cp.ledger_account a
    join report.ledger_balances r on r.kind = a.kind and r.currency = a.currency
     and r.owner = coalesce((select code from cp.carrier where carrier_id = a.carrier_id),
                            (select code from cp.merchant where merchant_id = a.merchant_id), a.country, 'platform')
$$;

select is((select (checked_through, journals)::text from cp.ledger_fold), '(0,0)', 'the fold starts empty');
select pg_temp.pay('f1');
select pg_temp.pay('f2');
select is(pg_temp.reported_balances(), pg_temp.scanned_balances(), 'before any fold the balances are the full sums');
select is(sched.fold_ledger(), 2, 'a fold folds the two journals');
select is((select checked_through from cp.ledger_fold), (select max(journal_id) from cp.journal),
          'and its watermark is the last of them');
select is((select sum(entries)::int from cp.ledger_fold_balance), (select count(*)::int from cp.ledger_entry),
          'every entry is in the fold');
select is(pg_temp.reported_balances(), pg_temp.scanned_balances(), 'the fold-backed balances are the full sums');
select is(sched.fold_ledger(), 0, 'a fold with nothing new folds nothing');

-- Entries past the watermark count before the next fold.
select pg_temp.pay('f3');
select is(pg_temp.reported_balances(), pg_temp.scanned_balances(),
          'a journal posted after the fold counts in the balances before the next fold');

-- A journal id taken by work that rolled back leaves a gap the watermark passes: remembered with the
-- transactions that could still post it (this one), never forgotten while one of them runs.
savepoint gap;
select pg_temp.pay('lost');
rollback to savepoint gap;
select pg_temp.pay('f4');
select is(sched.fold_ledger(), 2, 'the fold passes the gap and folds the journals on either side');
select is((select count(*)::int from cp.ledger_straggler), 1, 'the gap is remembered');
select ok((select s.lockers @> array[(select l.virtualtransaction from pg_catalog.pg_locks l
                                      where l.pid = pg_catalog.pg_backend_pid() limit 1)]
           from cp.ledger_straggler s), 'with the transactions then able to post journals, this one among them');
select sched.fold_ledger();
select is((select count(*)::int from cp.ledger_straggler), 1, 'and kept while one of them runs');
select is(pg_temp.reported_balances(), pg_temp.scanned_balances(), 'the balances are still the full sums');

-- An unbalanced journal (here visible to its own transaction before the commit check) is listed before and
-- after it is folded.
insert into cp.journal (procedure_id, kind, currency, posted_at)
select procedure_id, 'charge', 'NGN', now() from cp.journal order by journal_id desc limit 1;
insert into cp.ledger_entry (journal_id, account_id, amount_minor)
select (select max(journal_id) from cp.journal), account_id, 5 from cp.ledger_account order by account_id limit 2;
select is((select array_agg(off_by_minor)::text from report.unbalanced_journals), '{10}',
          'an unbalanced journal past the watermark is listed');
select sched.fold_ledger();
select is((select array_agg(journal_id)::text from report.unbalanced_journals),
          (select array_agg(journal_id)::text from cp.ledger_unbalanced),
          'and, once folded, from what the fold found (listed once)');
select is_empty('select * from report.ledger_audit', 'the long way finds nothing the fold-backed views miss');

select is((select seqcache from pg_catalog.pg_sequence
           where seqrelid = pg_catalog.pg_get_serial_sequence('cp.journal', 'journal_id')::regclass), 1::bigint,
          'journal ids are handed out one at a time, in order (what the fold''s gap rule relies on)');

select * from finish();
rollback;
