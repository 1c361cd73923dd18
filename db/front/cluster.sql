-- The cluster map as data: PL/Proxy's SQL/MED cluster definition. Server `carrierpay_shards` has one
-- option pN per partition (a libpq connection string without credentials); the user mapping for
-- PUBLIC holds the login the front uses on every shard. A change is picked up by the next call.

-- The partitions and where each lives, in partition order.
create or replace function front.list_partitions()
returns table (partition integer, connstr text)
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select substr(split_part(o.option, '=', 1), 2)::integer, substr(o.option, strpos(o.option, '=') + 1)
    from pg_catalog.pg_foreign_server s, unnest(s.srvoptions) as o(option)
    where s.srvname = 'carrierpay_shards' and o.option ~ '^p[0-9]+='
    order by 1
$$;

-- How many partitions the cluster has (a power of two); 0 before the map is set.
create or replace function front.partition_count() returns integer
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$ select count(*)::integer from front.list_partitions() $$;

-- Replace the cluster map. Partition k of the list is shard k; a partition keeps its number for
-- good (its ids carry it), so a map may point a partition at a new place but never renumber, nor
-- change the count.
create or replace function front.set_cluster(p_connstrs text[]) returns integer
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_count integer := coalesce(cardinality(p_connstrs), 0);
    v_options text;
begin
    if v_count = 0 or v_count > 512 or (v_count & (v_count - 1)) <> 0 then
        perform cp.fail('CP161', format('a cluster has a power-of-two number of partitions up to 512, not %s', v_count));
    end if;
    if exists (select 1 from unnest(p_connstrs) c where c is null or c ~* '(^|\s)(user|password)\s*=') then
        perform cp.fail('CP161', 'a partition is a connection string without user or password (the user mapping has them)');
    end if;
    -- A subscriber's partition is its number's hash masked by the count: another count would send
    -- existing subscribers (and their idempotency keys) to a partition that does not hold them.
    if front.partition_count() not in (0, v_count) then
        perform cp.fail('CP161', format('the cluster has %s partitions: the count never changes once set',
                                        front.partition_count()));
    end if;
    -- One statement sets every option, so no call ever sees half a map.
    if not exists (select 1 from pg_catalog.pg_foreign_server where srvname = 'carrierpay_shards') then
        select string_agg(format('p%s %L', i - 1, p_connstrs[i]), ', ' order by i) into v_options
        from generate_subscripts(p_connstrs, 1) i;
        execute format('create server carrierpay_shards foreign data wrapper plproxy options (%s)', v_options);
    else
        select string_agg(format('set p%s %L', i - 1, p_connstrs[i]), ', ' order by i) into v_options
        from generate_subscripts(p_connstrs, 1) i;
        execute format('alter server carrierpay_shards options (%s)', v_options);
    end if;
    return v_count;
end
$$;

-- The login (and password) the front uses on every shard: role carrierpay_front there.
create or replace function front.set_shard_login(p_user text, p_password text) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    execute 'drop user mapping if exists for public server carrierpay_shards';
    execute format('create user mapping for public server carrierpay_shards options (user %L, password %L)',
                   p_user, p_password);
end
$$;
