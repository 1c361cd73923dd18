-- Triggers on cp.carrier: payment rows refer to it without foreign keys, so its rows are never deleted
-- (cp.tg_parent__never_deleted, db/procedures/020_common.sql).

create or replace trigger _050_never_deleted before delete on cp.carrier
    for each row execute function cp.tg_parent__never_deleted();
create or replace trigger _051_never_truncated before truncate on cp.carrier
    for each statement execute function cp.tg_parent__never_deleted();
