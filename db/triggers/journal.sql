-- Triggers on cp.journal. Ledger rules: a journal is a real double entry (at least two entries,
-- balanced per currency, in its own currency), checked once per journal at the commit that posts it;
-- a journal is closed to new entries once that transaction is over (db/triggers/ledger_entry.sql);
-- journals and entries are immutable.

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

create or replace trigger _100_immutable before update or delete on cp.journal
    for each row execute function cp.tg_ledger__immutable();
create or replace trigger _101_immutable_truncate before truncate on cp.journal
    for each statement execute function cp.tg_ledger__immutable();

-- A constraint trigger cannot be replaced (CREATE OR REPLACE TRIGGER refuses it), and dropping it to
-- create it again would lock cp.journal against every reader and writer on each migrate: it is created
-- only when missing (a table rebuilt by a revision gets it back). Its function is replaced like any
-- other; a change to the trigger itself (events, deferral) goes in a versioned revision that drops it.
do $$
begin
    if not exists (select 1 from pg_catalog.pg_trigger
                   where tgrelid = 'cp.journal'::regclass and tgname = '_200_balanced') then
        create constraint trigger _200_balanced after insert on cp.journal
            deferrable initially deferred
            for each row execute function cp.tg_journal__balanced();
    end if;
end
$$;
