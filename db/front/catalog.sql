-- What the shards expose, read through the cluster: the front's api.* twins are generated from it.

-- Every shard's api.* functions: name, argument list (with defaults) and result, one row each.
create or replace function front.shard_api_functions()
returns table (partition text, name text, arguments text, identity_arguments text, result text,
               argument_names text[])
language plproxy
set search_path = pg_catalog, cp, pg_temp
as $$
    cluster 'carrierpay_shards';
    run on all;
    select pg_catalog.current_setting('carrierpay.partition', true) as partition, p.proname::text as name,
           pg_catalog.pg_get_function_arguments(p.oid) as arguments,
           pg_catalog.pg_get_function_identity_arguments(p.oid) as identity_arguments,
           pg_catalog.pg_get_function_result(p.oid) as result,
           p.proargnames::text[] as argument_names
    from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'api';
$$;
