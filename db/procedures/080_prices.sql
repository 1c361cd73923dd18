-- What a purchase costs: the one place that picks a product's price point on a carrier, for
-- one-time charges (api.charge), subscriptions (api.subscribe, SUB keywords by SMS) and renewals
-- with their step-down ladder (150_renewals.sql). The order, documented in docs/sql-api.md ("Price
-- points"): the carrier's own active points for the plan when it has any, else its country's (never
-- a mix of both), highest amount first; an inactive point is never chosen.

-- The price ladder every purchase and renewal reads, so that all of them agree on which points a
-- plan has on a carrier and in which order; level 0 is the full price, n the number of steps.
create or replace function cp.price_points_for(p_product_id integer, p_carrier_id integer, p_plan cp.plan)
returns table (price_point cp.price_point, level bigint, n bigint)
language sql stable
rows 3  -- a ladder is a few points; the default guess (1,000) misplans the batches that join it
set search_path = pg_catalog, cp, pg_temp
as $$
    select pp, row_number() over w - 1, count(*) over ()
    from cp.price_point pp
    join cp.carrier c on c.carrier_id = p_carrier_id
    where pp.product_id = p_product_id and pp.plan = p_plan and pp.active
      and (pp.carrier_id = c.carrier_id
           or (pp.carrier_id is null and pp.country = c.country
               and not exists (select 1 from cp.price_point x where x.product_id = pp.product_id
                               and x.plan = pp.plan and x.carrier_id = c.carrier_id and x.active)))
    window w as (order by pp.amount_minor desc, pp.price_point_id)
    order by pp.amount_minor desc, pp.price_point_id
$$;

-- The price point a purchase or a new subscription gets, refused the same way on every path: the
-- full price of the ladder, or the step of exactly p_amount_minor. CP007 when the plan has no active
-- price point on the carrier, CP006 when it has some but not the amount asked.
create or replace function cp.price_point_for(p_product_id integer, p_carrier_id integer, p_plan cp.plan,
                                              p_amount_minor bigint default null)
returns cp.price_point
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_pp cp.price_point;
    v_steps bigint;
    v_product text := (select code from cp.product where product_id = p_product_id);
    v_carrier text := (select code from cp.carrier where carrier_id = p_carrier_id);
begin
    -- Amounts are unique within a ladder (index price_point_unique), so at most one row matches.
    select (l.price_point).* into v_pp
    from cp.price_points_for(p_product_id, p_carrier_id, p_plan) l
    where case when p_amount_minor is null then l.level = 0 else (l.price_point).amount_minor = p_amount_minor end;
    if found then
        return v_pp;
    end if;
    select count(*) into v_steps from cp.price_points_for(p_product_id, p_carrier_id, p_plan);
    if v_steps = 0 then
        perform cp.fail('CP007', format('product %L has no active %s price on carrier %s', v_product, p_plan,
                                        v_carrier));
    end if;
    perform cp.fail('CP006', format('%s is not a price point of product %L (%s) on carrier %s',
                                    p_amount_minor, v_product, p_plan, v_carrier));
    return null;
end
$$;
