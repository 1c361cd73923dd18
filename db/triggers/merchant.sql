-- Triggers on cp.merchant: a webhook URL is checked whenever it is set, by whatever writes it.

-- Check a merchant's webhook URL on insert and on every change of it (cp.assert_webhook_url).
create or replace function cp.tg_merchant__webhook_url() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    perform cp.assert_webhook_url(new.webhook_url);
    return new;
end
$$;

create or replace trigger _100_webhook_url before insert or update of webhook_url on cp.merchant
    for each row when (new.webhook_url is not null)
    execute function cp.tg_merchant__webhook_url();

-- Payment rows refer to this table without foreign keys: its rows are never deleted (cp.tg_parent__never_deleted).
create or replace trigger _050_never_deleted before delete on cp.merchant
    for each row execute function cp.tg_parent__never_deleted();
create or replace trigger _051_never_truncated before truncate on cp.merchant
    for each statement execute function cp.tg_parent__never_deleted();
