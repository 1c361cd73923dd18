-- How a call finds its shard. A subscriber's MSISDN picks its partition (everything about the
-- subscriber lives there); an id carries the partition that issued it (a shard draws its ids from
-- its own block, carrierpay/migrate.py PARTITION_ID_BITS). The front authorizes the caller here,
-- before routing: the shards trust the front's login to act for any merchant.

-- A front made by an older release has its own copy of the calling role; the shared cp.calling_role
-- (db/procedures/005_callers.sql) replaces it.
drop function if exists front.calling_role();

-- Check that the calling role may act for the merchant (cp.may_act_for, the rule a shard applies).
create or replace function front.authorize_merchant(p_merchant text) returns void
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_role text;
    v_caller name := cp.calling_role();
begin
    select db_role into v_role from front.merchant where code = p_merchant;
    if not found then
        perform cp.fail('CP001', format('unknown merchant %L', left(p_merchant, 64)));
    end if;
    if not cp.may_act_for(v_caller, v_role) then
        perform cp.fail('CP002', format('role %s may not act for merchant %L', v_caller, left(p_merchant, 64)));
    end if;
end
$$;

-- The routing key of an MSISDN: its digits, without the 00 of an international prefix, so every
-- spelling a shard normalizes to the same E.164 number (cp.normalize_msisdn) lands on one shard.
-- A malformed number goes wherever its digits say and is refused there (CP005).
create or replace function front.msisdn_key(p_msisdn text) returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
    select regexp_replace(regexp_replace(coalesce(p_msisdn, ''), '[^0-9]', '', 'g'), '^00([1-9])', '\1')
$$;

-- The hash PL/Proxy masks with the partition count: the first 32 bits of the key's MD5, a function
-- fixed for good (hashtext may change between PostgreSQL versions, which would move subscribers).
create or replace function front.msisdn_hash(p_msisdn text) returns integer
language sql immutable
set search_path = pg_catalog, pg_temp
as $$ select ('x' || substr(md5(front.msisdn_key(p_msisdn)), 1, 8))::bit(32)::integer $$;

-- The partition of a subscriber, after checking the caller may act for the merchant.
create or replace function front.route_msisdn(p_merchant text, p_msisdn text) returns integer
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    perform front.authorize_merchant(p_merchant);
    return front.msisdn_hash(p_msisdn);
end
$$;

-- The partition that issued an id, after checking the caller may act for the merchant.
create or replace function front.route_id(p_merchant text, p_id bigint) returns integer
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_partition bigint := p_id >> 44;
begin
    perform front.authorize_merchant(p_merchant);
    if p_id is null or p_id <= 0 or v_partition >= front.partition_count() then
        perform cp.fail('CP160', format('id %s belongs to no partition of this cluster', left(p_id::text, 20)));
    end if;
    return v_partition;
end
$$;

-- The partition of an HTTP API request (db/procedures/230_http_api.sql takes the request as received):
-- its subscriber's number, in a CAMARA amountTransaction or at the top of our extensions' requests.
-- A request without one goes to partition 0, whose function refuses it as a single node would.
create or replace function front.route_request(p_merchant text, p_request jsonb) returns integer
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_msisdn text := coalesce(p_request->'amountTransaction'->>'phoneNumber', p_request->>'phoneNumber');
begin
    perform front.authorize_merchant(p_merchant);
    return case when v_msisdn is null then 0 else front.msisdn_hash(v_msisdn) end;
end
$$;

-- The partition of an id the HTTP API passes as text. Text that is no id goes to partition 0, whose
-- function answers that there is no such payment, as a single node would.
create or replace function front.route_text_id(p_merchant text, p_id text) returns integer
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    if p_id ~ '^[0-9]{1,18}$' then
        return front.route_id(p_merchant, p_id::bigint);
    end if;
    perform front.authorize_merchant(p_merchant);
    return 0;
end
$$;
