-- The paging rule of every list the HTTP API serves. The front applies this file too
-- (carrierpay/shards/front.py, SHARED_WITH_THE_NODES): its lists merged over the partitions take
-- their pages by the same rule. It calls only cp.fail, which the front has as well.

-- Which rows a page of a list holds (the ordinals after o_skip, up to o_last) for every paged list of
-- the HTTP API: page from 1 (default 1), perPage 1 to 100 (default 10), order asc or desc (default
-- desc, returned in o_order); anything else is CP120. bigint: a huge page number must not overflow.
create or replace function cp.page_window(p_order text, p_page integer, p_per_page integer,
                                          out o_order text, out o_skip bigint, out o_last bigint)
language plpgsql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    o_order := coalesce(p_order, 'desc');
    if coalesce(p_page, 1) < 1 or coalesce(p_per_page, 10) not between 1 and 100 or o_order not in ('asc', 'desc') then
        perform cp.fail('CP120', 'page must be at least 1, perPage between 1 and 100, order asc or desc');
    end if;
    o_skip := (coalesce(p_page, 1)::bigint - 1) * coalesce(p_per_page, 10);
    o_last := o_skip + coalesce(p_per_page, 10);
end
$$;
