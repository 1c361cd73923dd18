-- The paged lists of all a merchant's payments or subscriptions (the HTTP API's retrievePayments and
-- retrieveSubscriptions) span every partition: the front asks every partition for its first pages
-- (RUN ON ALL) and cuts the requested page out of their merge, in the order a single node pages them.
-- Applied after the twins are generated (carrierpay/shards/front.py, MERGED_ON_THE_FRONT), which
-- leaves these two functions out.

-- The items of ordinals (skip, last] of the partitions' items merged in a single node's order: by
-- creation time, then id (ids of different partitions never tie), newest or oldest first.
create or replace function front.merged_page(p_items jsonb, p_date_key text, p_id_key text, p_order text,
                                             p_skip bigint, p_last bigint) returns jsonb
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select coalesce(jsonb_agg(x.item order by x.ordinal), '[]'::jsonb)
    from (select i.item, row_number() over (
                     order by case when p_order = 'asc' then (i.item->>p_date_key)::timestamptz end,
                              case when p_order = 'desc' then (i.item->>p_date_key)::timestamptz end desc,
                              case when p_order = 'asc' then (i.item->>p_id_key)::bigint end,
                              (i.item->>p_id_key)::bigint desc) as ordinal
          from jsonb_array_elements(p_items) as i(item)) x
    where x.ordinal > p_skip and x.ordinal <= p_last
$$;

-- One page of api.list_payments from every partition.
create or replace function front.shard_list_payments(p_merchant text, p_from timestamptz, p_to timestamptz,
                                                     p_statuses text[], p_order text, p_page integer,
                                                     p_per_page integer, p_merchant_identifier text)
returns setof jsonb
language plproxy
set search_path = pg_catalog, cp, pg_temp
as $$
    cluster 'carrierpay_shards';
    run on all;
    target api.list_payments;
$$;

-- One page of api.list_subscriptions from every partition.
create or replace function front.shard_list_subscriptions(p_merchant text, p_statuses text[], p_page integer,
                                                          p_per_page integer)
returns setof jsonb
language plproxy
set search_path = pg_catalog, cp, pg_temp
as $$
    cluster 'carrierpay_shards';
    run on all;
    target api.list_subscriptions;
$$;

-- A page of a list over every partition (p_list: payments, or subscriptions) as a shard pages it,
-- {total, items, last_index}: each partition's first pages are read, 100 at a time until the page's
-- last ordinal was read or every partition ran out, and the page is cut out of their merge. A partition
-- that cannot be reached is CP162, nothing read anywhere (as the twins, carrierpay/shards/front.py).
create or replace function front.merged_list(p_list text, p_merchant text, p_from timestamptz, p_to timestamptz,
                                             p_statuses text[], p_order text, p_page integer, p_per_page integer,
                                             p_merchant_identifier text)
returns jsonb
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_window record := cp.page_window(p_order, p_page, p_per_page);
    v_key text := case p_list when 'payments' then 'payments' else 'items' end;
    v_round integer := 0;
    v_total bigint := 0;
    v_items jsonb := '[]'::jsonb;
    v_more boolean;
    v_part jsonb;
begin
    loop
        v_round := v_round + 1;
        v_more := false;
        -- Only the list asked for is read: the other branch's filter is constant false, so it never runs.
        for v_part in select * from front.shard_list_payments(p_merchant, p_from, p_to, p_statuses, v_window.o_order,
                                                              v_round, 100, p_merchant_identifier)
                      where p_list = 'payments'
                      union all
                      select * from front.shard_list_subscriptions(p_merchant, p_statuses, v_round, 100)
                      where p_list = 'subscriptions' loop
            if v_round = 1 then
                v_total := v_total + (v_part->>'total')::bigint;
            end if;
            v_items := v_items || (v_part->v_key);
            v_more := v_more or jsonb_array_length(v_part->v_key) = 100;
        end loop;
        exit when not v_more or v_round::bigint * 100 >= v_window.o_last;
    end loop;
    v_items := case p_list
        when 'payments' then front.merged_page(v_items, 'paymentCreationDate', 'paymentId', v_window.o_order,
                                               v_window.o_skip, v_window.o_last)
        else front.merged_page(v_items, 'creationDate', 'subscriptionId', v_window.o_order, v_window.o_skip,
                               v_window.o_last) end;
    return jsonb_build_object('total', v_total, 'items', v_items,
                              'last_index', v_window.o_skip + jsonb_array_length(v_items));
exception when internal_error then
    -- PL/Proxy's connect failure.
    if sqlerrm like '%PQconnectPoll%' then
        perform cp.fail('CP162', 'a partition cannot be reached: retry later');
    end if;
    raise;
end
$$;

-- CAMARA retrievePayments over every partition: the same arguments, document and errors as a shard's.
create or replace function api.list_payments(p_merchant text, p_from timestamptz default null,
                                             p_to timestamptz default null, p_statuses text[] default null,
                                             p_order text default 'desc', p_page integer default 1,
                                             p_per_page integer default 10, p_merchant_identifier text default null)
returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_page jsonb;
begin
    perform front.authorize_merchant(p_merchant);
    v_page := front.merged_list('payments', p_merchant, p_from, p_to, p_statuses, p_order, p_page, p_per_page,
                                p_merchant_identifier);
    return jsonb_build_object('total', v_page->'total', 'payments', v_page->'items', 'last_index', v_page->'last_index');
end
$$;

-- GET /carrierpay/v1/subscriptions over every partition (newest first, as on a shard).
create or replace function api.list_subscriptions(p_merchant text, p_statuses text[] default null,
                                                  p_page integer default 1, p_per_page integer default 10)
returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    perform front.authorize_merchant(p_merchant);
    return front.merged_list('subscriptions', p_merchant, null, null, p_statuses, 'desc', p_page, p_per_page, null);
end
$$;
