-- Triggers on cp.ledger_entry: entries are immutable (cp.tg_ledger__immutable, db/triggers/journal.sql)
-- and go only into a journal posted by the same transaction.

-- Entries go only into a journal posted by this same transaction: a journal of an earlier one was
-- checked when it committed, and is closed. One query per statement; a journal whose check already
-- ran in this transaction (SET CONSTRAINTS ... IMMEDIATE) is checked again now, as none is pending.
create or replace function cp.tg_ledger_entry__journal_open() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_xact xid8 := pg_catalog.pg_current_xact_id();
    v_checked bigint := nullif(pg_catalog.current_setting('carrierpay.ledger_checked_through', true), '')::bigint;
    v_journal cp.journal;
begin
    -- Entries carry no foreign keys (cp.tg_parent__never_deleted): their journal and account are checked here.
    if exists (select from new_rows n
               where not exists (select from cp.journal j where j.journal_id = n.journal_id)
                  or not exists (select from cp.ledger_account a where a.account_id = n.account_id)) then
        perform cp.fail('CP066', 'ledger entries go into a journal posted by the same transaction, on an existing '
                                 'account');
    end if;
    for v_journal in
        select j.* from (select distinct journal_id from new_rows) n join cp.journal j using (journal_id)
        where j.xact_id is distinct from v_xact or j.journal_id <= v_checked
        order by j.journal_id
    loop
        if v_journal.xact_id is distinct from v_xact then
            perform cp.fail('CP066', format('journal %s is closed: entries are added only by the transaction that '
                                            'posts it; post a new journal instead', v_journal.journal_id));
        end if;
        perform cp.assert_journal_balanced(v_journal.journal_id, v_journal.currency);
    end loop;
    return null;
end
$$;

create or replace trigger _100_immutable before update or delete on cp.ledger_entry
    for each row execute function cp.tg_ledger__immutable();
create or replace trigger _101_immutable_truncate before truncate on cp.ledger_entry
    for each statement execute function cp.tg_ledger__immutable();
create or replace trigger _200_journal_open after insert on cp.ledger_entry
    referencing new table as new_rows
    for each statement execute function cp.tg_ledger_entry__journal_open();
