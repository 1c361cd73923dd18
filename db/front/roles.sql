-- Who may execute and read what on the front; applied last by `carrierpay shards init`, after the
-- api.* twins are generated, so every twin gets exactly these privileges. PL/Proxy opens its shard
-- connections for the caller's login, which needs USAGE on the cluster's server; the user mapping's
-- password stays readable only by the server's owner.
--
--   carrierpay_merchant  api.*
--   carrierpay_reporter  select on report.* (and the front.shard_* functions the reports read)
--   carrierpay_admin     api.*, select on report.*
do $$
declare
    v_schema text;
begin
    foreach v_schema in array array['cp', 'front', 'api', 'report'] loop
        execute pg_catalog.format('revoke all on all functions in schema %I from public, carrierpay_merchant, '
                                  'carrierpay_reporter, carrierpay_admin', v_schema);
        execute pg_catalog.format('revoke all on all tables in schema %I from public, carrierpay_merchant, '
                                  'carrierpay_reporter, carrierpay_admin', v_schema);
    end loop;
    execute pg_catalog.format('revoke temporary on database %I from public', pg_catalog.current_database());
end
$$;
revoke create on schema public from public;
revoke all on schema cp, front from public;

grant usage on schema api to carrierpay_merchant, carrierpay_admin;
grant usage on schema report, front to carrierpay_reporter, carrierpay_admin;
grant usage on foreign server carrierpay_shards to carrierpay_merchant, carrierpay_reporter, carrierpay_admin;

grant execute on all functions in schema api to carrierpay_merchant, carrierpay_admin;
grant execute on function front.shard_notifications(), front.shard_ledger_balances(), front.shard_revenue(),
    front.shard_configuration() to carrierpay_reporter, carrierpay_admin;
grant select on all tables in schema report to carrierpay_reporter, carrierpay_admin;
