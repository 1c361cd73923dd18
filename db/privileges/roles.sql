-- Who may execute and read what: the only place privileges on carrierpay's functions and views
-- are granted. Applied after every other repeatable file by `carrierpay db migrate`, so a
-- function created or replaced since the last run gets exactly the privileges below, and
-- nothing else. docs/security.md lists the same inventory; tests/security checks the catalog
-- against it after a migrate.
--
--   carrierpay_merchant  api.*                                   (through the merchant's own role)
--   carrierpay_adapter   adapter.*                               (adapter daemons, reconciler, callback
--                                                                 server, webhook dispatcher, history shipper)
--   carrierpay_reporter  select on report.*                      (DBAs)
--   carrierpay_admin     admin.*, api.*, sched.run_due, sched.due_left, sched.fold_hour_stats, sched.fold_rollups,
--                        sched.fold_ledger, sched.run_breakers, select on report.*
--   carrierpay_front     what carrierpay_admin and carrierpay_reporter may (the front database's login on
--                         a shard, docs/sharding.md: the front authorizes the merchant before routing)
--   carrierpay_gateway   gateway.*                               (the merchant HTTP API server; it acts for a
--                                                                 merchant only after SET ROLE to the merchant's role)
--
-- PostgreSQL grants EXECUTE on every new function to PUBLIC unless told otherwise, and
-- ALTER DEFAULT PRIVILEGES cannot take that back for roles other than the one that ran it, so
-- the reset here is explicit: revoke everything, then grant the table above.

-- Temporary tables are how a caller's own objects could shadow ours; nobody but the owner (and
-- the operators' admin role, whose tools may stage data) needs them. A database privilege is
-- not copied by CREATE DATABASE … TEMPLATE, so `carrierpay db migrate` calls this on every run,
-- even when nothing else is pending.
create or replace function cp.restrict_temporary_tables() returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    execute pg_catalog.format('revoke temporary on database %I from public', pg_catalog.current_database());
    execute pg_catalog.format('grant temporary on database %I to carrierpay_admin', pg_catalog.current_database());
end
$$;
-- The HTTP API server (a member of carrierpay_gateway) acts for a merchant by SET ROLE to the merchant's
-- role, which it may do only once it is a member of that role. Granted when the merchant gets its
-- first API client (admin.add_api_client), and here again on every migrate for merchants that have one.
-- Membership gives nothing by itself: cp.authorize_merchant accepts the merchant's role only as the
-- role set, never as an inherited one.
create or replace function cp.admit_gateway(p_role text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if not pg_catalog.pg_has_role('carrierpay_gateway', p_role, 'member') then
        execute pg_catalog.format('grant %I to carrierpay_gateway', p_role);
    end if;
end
$$;
do $$
declare
    v_schema text;
begin
    foreach v_schema in array array['cp', 'api', 'admin', 'adapter', 'report', 'sched', 'gateway'] loop
        execute pg_catalog.format('revoke all on all functions in schema %I from public, carrierpay_merchant, '
                                  'carrierpay_adapter, carrierpay_reporter, carrierpay_admin, carrierpay_gateway',
                                  v_schema);
        execute pg_catalog.format('revoke all on all tables in schema %I from public, carrierpay_merchant, '
                                  'carrierpay_adapter, carrierpay_reporter, carrierpay_admin, carrierpay_gateway',
                                  v_schema);
        execute pg_catalog.format('revoke all on all sequences in schema %I from public, carrierpay_merchant, '
                                  'carrierpay_adapter, carrierpay_reporter, carrierpay_admin, carrierpay_gateway',
                                  v_schema);
    end loop;
end
$$;

select cp.restrict_temporary_tables();

revoke create on schema public from public;
revoke all on schema cp, sched, gateway from public;

grant usage on schema api to carrierpay_merchant, carrierpay_admin;
grant usage on schema admin to carrierpay_admin;
grant usage on schema adapter to carrierpay_adapter;
grant usage on schema report to carrierpay_reporter, carrierpay_admin;
grant usage on schema sched to carrierpay_admin;
grant usage on schema gateway to carrierpay_gateway;

grant execute on all functions in schema api to carrierpay_merchant, carrierpay_admin;
grant execute on all functions in schema admin to carrierpay_admin;
grant execute on all functions in schema adapter to carrierpay_adapter;
grant execute on all functions in schema gateway to carrierpay_gateway;
grant execute on function sched.run_due(integer, integer), sched.due_left(), sched.fold_hour_stats(), sched.fold_rollups(integer, interval, interval),
    sched.fold_ledger(integer), sched.run_breakers(integer) to carrierpay_admin;
grant select on all tables in schema report to carrierpay_reporter, carrierpay_admin;

-- The login a sharded deployment's front database uses on this shard (docs/sharding.md). It carries
-- every merchant's calls, so it acts for any merchant, as an operator does; the front has already
-- checked the caller's role before routing. NOLOGIN until `carrierpay shards init` gives it a password.
do $$
begin
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'carrierpay_front') then
        create role carrierpay_front nologin;
    end if;
end
$$;
grant carrierpay_admin, carrierpay_reporter to carrierpay_front;
-- Merchants that had API clients before this database was restored or its roles recreated.
select cp.admit_gateway(m.db_role) from cp.merchant m
where exists (select 1 from cp.api_client c where c.merchant_id = m.merchant_id and c.revoked_at is null);
