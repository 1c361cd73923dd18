-- Triggers on cp.product: payment rows refer to it without foreign keys, so its rows are never deleted
-- (cp.tg_parent__never_deleted, db/procedures/020_common.sql).

create or replace trigger _050_never_deleted before delete on cp.product
    for each row execute function cp.tg_parent__never_deleted();
create or replace trigger _051_never_truncated before truncate on cp.product
    for each statement execute function cp.tg_parent__never_deleted();
