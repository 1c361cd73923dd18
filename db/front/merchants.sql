-- Merchants log in to the front, not to the shards. `carrierpay shards admin add_merchant` registers
-- the merchant here in the same two-phase commit that creates it on every shard, with the password
-- the first shard issued, so the document the operator receives is the merchant's front login.

-- Create (or adopt, if carrierpay made it for this merchant) the merchant's login and register it.
create or replace function front.register_merchant(p_code text, p_password text) returns jsonb
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_role text := 'cp_merchant_' || p_code;
    v_marker text := 'carrierpay merchant role for ' || p_code;
    v_existing pg_catalog.pg_roles;
begin
    if p_code is null or p_code !~ '^[a-z0-9_]{1,40}$' then
        perform cp.fail('CP080', format('merchant code %L must be 1-40 lowercase letters, digits or _', left(p_code, 64)));
    end if;
    select * into v_existing from pg_catalog.pg_roles where rolname = v_role;
    if not found then
        execute format('create role %I login', v_role);
        execute format('comment on role %I is %L', v_role, v_marker);
    elsif pg_catalog.shobj_description(v_existing.oid, 'pg_authid') is distinct from v_marker
          or v_existing.rolsuper or v_existing.rolcreaterole or v_existing.rolcreatedb
          or v_existing.rolreplication or v_existing.rolbypassrls then
        perform cp.fail('CP085', format('role %s exists and was not created by carrierpay for merchant %L', v_role, p_code));
    end if;
    execute format('grant carrierpay_merchant to %I', v_role);
    perform front.set_merchant_password(p_code, p_password);
    insert into front.merchant (code, db_role) values (p_code, v_role) on conflict (code) do nothing;
    return jsonb_build_object('code', p_code, 'db_role', v_role, 'status', 'registered');
end
$$;

-- Set the merchant's front login password (kept by the server as a SCRAM verifier).
create or replace function front.set_merchant_password(p_code text, p_password text) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'cp_merchant_' || p_code) then
        perform cp.fail('CP001', format('unknown merchant %L', left(p_code, 64)));
    end if;
    perform pg_catalog.set_config('password_encryption', 'scram-sha-256', true);
    execute format('alter role %I with login password %L', 'cp_merchant_' || p_code, p_password);
end
$$;
