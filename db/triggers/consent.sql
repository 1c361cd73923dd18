-- Triggers on cp.consent: the consent log, which has no states, never changes.

-- Consent is evidence (who agreed to what, when, how): rows are only ever added.
create or replace function cp.tg_consent__immutable() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    perform cp.fail('CP069', 'consent rows are immutable: consent is evidence, only ever added');
    return null;
end
$$;

create or replace trigger _100_immutable before update or delete on cp.consent
    for each row execute function cp.tg_consent__immutable();
create or replace trigger _101_immutable_truncate before truncate on cp.consent
    for each statement execute function cp.tg_consent__immutable();
