-- Errors and callers: what a shard and the front database of a sharded deployment share as they are
-- (carrierpay/shards/front.py applies this file to the front too), so a refusal carries the same code
-- and a caller is allowed or refused by the same rule on both.
-- Error codes (SQLSTATE class CP) are listed in docs/sql-api.md; raise them only through cp.fail so
-- the same cause always carries the same code.

-- Raise one of carrierpay's documented errors.
create or replace function cp.fail(p_code text, p_message text, p_detail text default null)
returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    raise exception using errcode = p_code, message = p_message, detail = coalesce(p_detail, '');
end
$$;

-- The role a caller acts as: the role it SET ROLE to, else its login. Inside a SECURITY DEFINER
-- function current_user is the owner, so this is how the API sees who called it; a pooled login
-- that does SET ROLE cp_merchant_x is x and nothing more.
create or replace function cp.calling_role() returns name
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select case when pg_catalog.current_setting('role') in ('', 'none') then session_user
                else pg_catalog.current_setting('role')::name end
$$;

-- Whether a caller may act for the merchant whose login role is p_role: a merchant's role only for
-- itself; the owner of the cp schema, superusers and carrierpay_admin members for anyone. Every
-- catalog name is qualified: a caller's temporary table must never stand in for pg_roles. A merchant
-- without a role is nobody's to act for but the operators'.
create or replace function cp.may_act_for(p_caller name, p_role text) returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select coalesce(p_caller::text = p_role, false)
        or pg_catalog.pg_has_role(p_caller, 'carrierpay_admin', 'member')
        or exists (select 1 from pg_catalog.pg_roles r where r.rolname = p_caller and r.rolsuper)
        or p_caller::text = (select pg_catalog.pg_get_userbyid(n.nspowner)
                             from pg_catalog.pg_namespace n where n.nspname = 'cp')
$$;
