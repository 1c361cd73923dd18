-- The front database of a sharded deployment (docs/sharding.md): it holds no payment, only the
-- cluster map, the merchants' logins and PL/Proxy functions that route each call to its shard.
-- `carrierpay shards init` applies these files in name order, generates the api.* twins from a
-- shard's catalog (carrierpay/shards/front.py), then applies roles.sql.

create extension if not exists plproxy;

create schema if not exists cp;
create schema if not exists front;
create schema if not exists api;
create schema if not exists report;

-- The same group roles a shard has: merchants log in here, operators and DBAs read here.
do $$
declare
    v_role text;
begin
    foreach v_role in array array['carrierpay_admin', 'carrierpay_merchant', 'carrierpay_reporter'] loop
        if not exists (select 1 from pg_catalog.pg_roles where rolname = v_role) then
            execute pg_catalog.format('create role %I nologin', v_role);
        end if;
    end loop;
end
$$;

-- Merchants whose calls the front accepts, and the login role that may make them.
create table if not exists front.merchant (
    code    text primary key check (code ~ '^[a-z0-9_]{1,40}$'),
    db_role text not null unique
);

-- The decision record of `carrierpay shards admin` (two-phase commit across the shards): a change
-- whose row is here was decided "commit"; a change prepared on a shard with no row here is rolled
-- back by `carrierpay shards recover`.
create table if not exists front.admin_change (
    gid        text primary key,
    function   text not null,
    decided_at timestamptz not null default now()
);
