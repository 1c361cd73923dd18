-- Ledger rules: a journal is a real double entry (at least two entries, balanced per currency, in
-- its own currency), checked once per journal at the commit that posts it; a journal is closed to
-- new entries once that transaction is over; journals and entries are immutable.

-- Reject any change to a posted journal or entry: corrections are new compensating journals.
create or replace function cp.tg_ledger__immutable() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    perform cp.fail('CP062', format('%s rows are immutable; post a compensating journal instead', tg_table_name));
    return null;
end
$$;

-- At commit, once per journal posted in the transaction: check it (cp.assert_journal_balanced), and
-- remember that journals up to this one have been checked, for entries added after an early check
-- (SET CONSTRAINTS ... IMMEDIATE) to be checked at once instead.
create or replace function cp.tg_journal__balanced() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    perform cp.assert_journal_balanced(new.journal_id, new.currency);
    if new.journal_id > coalesce(nullif(pg_catalog.current_setting('carrierpay.ledger_checked_through', true),
                                        '')::bigint, 0) then
        perform pg_catalog.set_config('carrierpay.ledger_checked_through', new.journal_id::text, true);
    end if;
    return null;
end
$$;

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

drop trigger if exists _200_balanced on cp.ledger_entry;
drop function if exists cp.tg_ledger_entry__balanced();

drop trigger if exists _100_immutable on cp.ledger_entry;
create trigger _100_immutable before update or delete on cp.ledger_entry
    for each row execute function cp.tg_ledger__immutable();
drop trigger if exists _101_immutable_truncate on cp.ledger_entry;
create trigger _101_immutable_truncate before truncate on cp.ledger_entry
    for each statement execute function cp.tg_ledger__immutable();
drop trigger if exists _200_journal_open on cp.ledger_entry;
create trigger _200_journal_open after insert on cp.ledger_entry
    referencing new table as new_rows
    for each statement execute function cp.tg_ledger_entry__journal_open();
drop trigger if exists _100_immutable on cp.journal;
create trigger _100_immutable before update or delete on cp.journal
    for each row execute function cp.tg_ledger__immutable();
drop trigger if exists _101_immutable_truncate on cp.journal;
create trigger _101_immutable_truncate before truncate on cp.journal
    for each statement execute function cp.tg_ledger__immutable();
drop trigger if exists _200_balanced on cp.journal;
create constraint trigger _200_balanced after insert on cp.journal
    deferrable initially deferred
    for each row execute function cp.tg_journal__balanced();
