-- Ledger rules: journals balance at commit; journals and entries are immutable.

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

-- At commit, check the journal of each inserted entry balances.
create or replace function cp.tg_ledger_entry__balanced() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    perform cp.assert_journal_balanced(new.journal_id);
    return null;
end
$$;

drop trigger if exists _100_immutable on cp.ledger_entry;
create trigger _100_immutable before update or delete on cp.ledger_entry
    for each row execute function cp.tg_ledger__immutable();
drop trigger if exists _101_immutable_truncate on cp.ledger_entry;
create trigger _101_immutable_truncate before truncate on cp.ledger_entry
    for each statement execute function cp.tg_ledger__immutable();
drop trigger if exists _100_immutable on cp.journal;
create trigger _100_immutable before update or delete on cp.journal
    for each row execute function cp.tg_ledger__immutable();
drop trigger if exists _101_immutable_truncate on cp.journal;
create trigger _101_immutable_truncate before truncate on cp.journal
    for each statement execute function cp.tg_ledger__immutable();
drop trigger if exists _200_balanced on cp.ledger_entry;
create constraint trigger _200_balanced after insert on cp.ledger_entry
    deferrable initially deferred
    for each row execute function cp.tg_ledger_entry__balanced();
