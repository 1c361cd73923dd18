-- Subscription lifecycle: periods in the subscriber's local time, renewals, the outcome of a renewal
-- charge (grace, suspension and cancellation; retry times in 140_timing.sql). Each renewal attempt is its own charge procedure; a partial
-- unique index on cp.procedure allows at most one live charge per subscription period.

-- Start of period p_index of a subscription: the local anchor plus whole plan steps, converted in
-- the subscriber's zone. Counting from the anchor keeps month ends right (31 Jan → 28/29 Feb → 31 Mar).
create or replace function cp.period_start(p_anchor_local timestamp, p_plan cp.plan, p_index integer,
                                           p_timezone text)
returns timestamptz
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select (p_anchor_local + case p_plan
                when 'daily' then make_interval(days => p_index)
                when 'weekly' then make_interval(weeks => p_index)
                when 'monthly' then make_interval(months => p_index)
                else interval '0' end) at time zone p_timezone
$$;

-- The ladder moved to 080_prices.sql (cp.price_points_for), the one owner of price selection.
drop function if exists cp.price_ladder(integer, cp.plan, integer);

-- The price point a subscription attempt should charge: its ladder (cp.price_points_for) stepped
-- down p_level places from the full price, never below the lowest.
create or replace function cp.renewal_price_point(p_subscription cp.subscription, p_level integer)
returns cp.price_point
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select l.price_point
    from cp.subscriber s
    cross join lateral cp.price_points_for(p_subscription.product_id, s.carrier_id, p_subscription.plan) l
    where s.subscriber_id = p_subscription.subscriber_id
      and l.level = least(greatest(p_level, 0), l.n - 1)
$$;

-- The retry policy on insufficient funds: the carrier's rules may override the product's.
create or replace function cp.retry_policy(p_carrier_id integer, p_product_id integer) returns text
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select coalesce(cp.effective_rules(p_carrier_id)->>'retry_policy', p.retry_policy)
    from cp.product p where p.product_id = p_product_id
$$;

-- Create the charge procedures and calls for the current periods of a batch of subscriptions, with
-- a few set-based statements (the caller holds the subscription rows locked). Per subscription: the
-- price point of its retry level (cp.renewal_price_point); under the 'accumulate' policy, once a
-- period is being collected in parts, a partial charge of that point's amount capped at what the
-- period still owes, recorded against the full price point; a procedure for the period, a charge
-- call (correlator 'cp-' || call id) and its queue row; today's attempt counted. Returns the new
-- procedure ids in the order of p_subscription_ids.
create or replace function cp.start_renewals(p_subscription_ids bigint[]) returns bigint[]
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_now timestamptz := cp.clock_now();
    v_missing text;
    v_procs bigint[];
    v_call_ids bigint[];
begin
    select c.code into v_missing
    from cp.subscription s
    join cp.subscriber sb on sb.subscriber_id = s.subscriber_id
    join cp.carrier c on c.carrier_id = sb.carrier_id
    where s.subscription_id = any (p_subscription_ids) and c.spec->'operations'->'charge' is null
    limit 1;
    if v_missing is not null then
        perform cp.fail('CP071', format('carrier %s does not offer operation %s', v_missing, 'charge'));
    end if;
    -- A plan left without an active price point is refused as a new purchase of it would be (CP007),
    -- not charged nothing; checked once per product, plan and carrier of the batch.
    perform cp.price_point_for(k.product_id, k.carrier_id, k.plan)
    from (select distinct s.product_id, s.plan, sb.carrier_id
          from cp.subscription s join cp.subscriber sb on sb.subscriber_id = s.subscriber_id
          where s.subscription_id = any (p_subscription_ids)) k;

    with subs as (
        select s.subscription_id, s.subscriber_id, s.merchant_id, s.product_id, s.plan, s.period_index,
               s.retry_level, s.collected_in_period, s.carrier_id, sb.carrier_id as subscriber_carrier_id, u.ord
        from unnest(p_subscription_ids) with ordinality u(id, ord)
        join cp.subscription s on s.subscription_id = u.id
        join cp.subscriber sb on sb.subscriber_id = s.subscriber_id
    ), ladder as (
        -- each (product, plan, carrier) ladder once per batch
        select k.product_id, k.plan, k.subscriber_carrier_id, l.price_point, l.level, l.n
        from (select distinct product_id, plan, subscriber_carrier_id from subs) k
        cross join lateral cp.price_points_for(k.product_id, k.subscriber_carrier_id, k.plan) l
    ), policies as (
        -- the carrier's rules may override the product's retry policy (cp.retry_policy)
        select d.carrier_id, cp.effective_rules(d.carrier_id)->>'retry_policy' as retry_policy
        from (select distinct carrier_id from subs) d
    ), chosen as (
        select s.*, f.price_point as full_pp, lv.price_point as pp,
               coalesce(coalesce(pol.retry_policy, p.retry_policy) = 'accumulate'
                        and (s.retry_level > 0 or s.collected_in_period > 0), false) as partial
        from subs s
        left join ladder f on f.product_id = s.product_id and f.plan = s.plan
                          and f.subscriber_carrier_id = s.subscriber_carrier_id and f.level = 0
        left join ladder lv on lv.product_id = s.product_id and lv.plan = s.plan
                           and lv.subscriber_carrier_id = s.subscriber_carrier_id
                           and lv.level = least(greatest(s.retry_level, 0), lv.n - 1)
        left join policies pol on pol.carrier_id = s.carrier_id
        left join cp.product p on p.product_id = s.product_id
    ), ins as (
        insert into cp.procedure (kind, merchant_id, subscriber_id, carrier_id, product_id, price_point_id,
                                  subscription_id, parent_id, period_index, amount_minor, currency, variant,
                                  metadata, created_at, updated_at, holds_period)
        select 'charge', c.merchant_id, c.subscriber_id, c.subscriber_carrier_id, c.product_id,
               case when c.partial then (c.full_pp).price_point_id else (c.pp).price_point_id end,
               c.subscription_id, null, c.period_index,
               -- partial: never more than what the period still owes
               case when c.partial then least((c.pp).amount_minor, (c.full_pp).amount_minor - c.collected_in_period)
                    else (c.pp).amount_minor end,
               case when c.partial then (c.full_pp).currency else (c.pp).currency end,
               case when c.partial then (c.full_pp).variant else (c.pp).variant end,
               case when c.partial then jsonb_build_object('partial', true) else '{}'::jsonb end,
               v_now, v_now,
               case when not c.partial then true end  -- a part of a period does not take it (cp.new_procedure)
        from chosen c
        order by c.ord
        returning procedure_id
    )
    select array_agg(ins.procedure_id order by ins.procedure_id)  -- identities follow p_subscription_ids' order
    into v_procs
    from ins;

    -- Each charge call waits on the queue for its subscriber's charging hours (a subscription confirmed
    -- at night is charged when they open); the opening is worked out once per carrier's hours and zone.
    with hours as materialized (
        select d.carrier_id, nullif(cp.effective_rules(d.carrier_id)->>'charging_hours', '') as hours
        from (select distinct carrier_id from cp.procedure where procedure_id = any (v_procs)) d
    ), planned as materialized (
        select p.procedure_id, cp.charge_params(p, p.amount_minor) as params,
               coalesce(s.timezone, c.timezone) as timezone, h.hours
        from cp.procedure p
        join cp.carrier c on c.carrier_id = p.carrier_id
        join cp.subscriber s on s.subscriber_id = p.subscriber_id
        join hours h on h.carrier_id = p.carrier_id
        where p.procedure_id = any (v_procs)
    ), openings as materialized (
        select z.timezone, z.hours, cp.next_charging_time(z.hours, z.timezone, v_now) as opening
        from (select distinct timezone, hours from planned where hours is not null) z
    )
    select cp.queue_calls(array_agg(x.procedure_id order by x.procedure_id), 'charge',
                          array_agg(x.params order by x.procedure_id),
                          array_agg(coalesce(o.opening, v_now) order by x.procedure_id))
    into v_call_ids
    from planned x
    left join openings o on o.timezone = x.timezone and o.hours = x.hours;

    update cp.subscription
    set next_charge_at = null,
        balance_checked_at = null,  -- a balance query answers for the charge it came before, not the next
        attempts_today = case when attempts_day = (v_now at time zone cp.subscriber_timezone(subscriber_id))::date
                              then attempts_today + 1 else 1 end,
        attempts_day = (v_now at time zone cp.subscriber_timezone(subscriber_id))::date
    where subscription_id = any (p_subscription_ids);
    return coalesce(v_procs, '{}');
end
$$;

-- A balance query instead of a charge for due renewals the subscriber timing says will likely fail
-- (cp.renewals_to_query, at carriers where cp.balance_before_renewal holds): a balance_check procedure of
-- the subscription's period for the full price, and its carrier call; the renewal is not due while the
-- query is out. No charge attempt is counted. cp.renewal_balance_answered takes the answer.
create or replace function cp.start_balance_checks(p_subscription_ids bigint[]) returns bigint[]
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_sub record;
    v_proc cp.procedure;
    v_procs bigint[] := '{}';
begin
    for v_sub in
        select s.subscription_id, s.merchant_id, s.period_index, b as subscriber, x.pp
        from cp.subscription s
        join cp.subscriber b on b.subscriber_id = s.subscriber_id
        cross join lateral (select cp.renewal_price_point(s, 0) as pp) x
        where s.subscription_id = any (p_subscription_ids)
        order by s.subscription_id
    loop
        v_proc := cp.new_procedure('balance_check', v_sub.subscriber, v_sub.merchant_id, (v_sub.pp).amount_minor,
                                   (v_sub.pp).currency, p_subscription_id => v_sub.subscription_id,
                                   p_period_index => v_sub.period_index);
        perform cp.queue_call(v_proc.procedure_id, 'balance',
                              jsonb_build_object('msisdn', (v_sub.subscriber).msisdn,
                                                 'amount_minor', (v_sub.pp).amount_minor,
                                                 'currency', (v_sub.pp).currency));
        v_procs := v_procs || v_proc.procedure_id;
    end loop;
    update cp.subscription set next_charge_at = null where subscription_id = any (p_subscription_ids);
    return v_procs;
end
$$;

-- A renewal's balance query answered (cp.apply_call_result; p_balance null: no definite answer). The
-- full price covered, or no definite answer (the query failed: the renewal goes on as it would have
-- without it): due now, charged without another query. Short of it, but covering a lower price point
-- of the plan's ladder where the retry policy steps down: stepped down to the highest one it covers and
-- due now, so what the subscriber has is collected without a failed charge first. Short of every step:
-- due at its next retry time at the same price, no attempt counted (no charge was made). Only while the
-- subscription still waits on this period's query (a late or repeated answer changes nothing).
create or replace function cp.renewal_balance_answered(p_proc cp.procedure, p_balance bigint) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_sub cp.subscription;
    v_level bigint;
begin
    select * into v_sub from cp.subscription
    where subscription_id = p_proc.subscription_id and period_index = p_proc.period_index
      and next_charge_at is null and status in ('active', 'retrying', 'grace', 'suspended')
    for update;
    if not found then
        return;
    end if;
    if p_balance < p_proc.amount_minor then  -- null (no definite answer) is not short: charged now
        if cp.retry_policy(v_sub.carrier_id, v_sub.product_id) = 'step_down' then
            select min(l.level) into v_level
            from cp.price_points_for(v_sub.product_id, v_sub.carrier_id, v_sub.plan) l
            where l.level > v_sub.retry_level and (l.price_point).amount_minor <= p_balance;
        end if;
        if v_level is null then
            update cp.subscription set next_charge_at = cp.next_retry_time(v_sub.subscription_id)
            where subscription_id = v_sub.subscription_id;
            return;
        end if;
    end if;
    update cp.subscription
    set retry_level = coalesce(v_level, retry_level), next_charge_at = cp.clock_now(),
        balance_checked_at = cp.clock_now()
    where subscription_id = v_sub.subscription_id;
end
$$;

-- Create the charge procedure and call for one subscription's current period (cp.start_renewals).
create or replace function cp.start_renewal(p_subscription_id bigint) returns bigint
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    perform 1 from cp.subscription where subscription_id = p_subscription_id for update;
    if not found then
        perform cp.fail('CP050', format('unknown subscription %s', p_subscription_id));
    end if;
    return (cp.start_renewals(array[p_subscription_id]))[1];
end
$$;

-- Activate a subscription (after opt-in, or at once where none is needed) and queue its first charge.
-- Confirmed outside the charging hours, its first period starts (and is charged) when they open.
-- Returns the first charge's procedure id, or null when it was no longer waiting for its opt-in (a
-- PIN and a YES can both confirm one subscription: the second changes nothing).
create or replace function cp.activate_subscription(p_subscription_id bigint) returns bigint
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_sub cp.subscription;
    v_tz text;
    v_start timestamptz;
begin
    select * into v_sub from cp.subscription
    where subscription_id = p_subscription_id and status = 'pending_optin'
    for update;
    if not found then
        return null;
    end if;
    v_tz := cp.subscriber_timezone(v_sub.subscriber_id);
    v_start := cp.next_charging_time(nullif(cp.effective_rules(v_sub.carrier_id)->>'charging_hours', ''), v_tz,
                                     cp.clock_now());
    update cp.subscription
    set status = 'active',
        anchor_local = v_start at time zone v_tz,
        period_index = 0,
        period_base = 0
    where subscription_id = p_subscription_id;
    return cp.start_renewal(p_subscription_id);
end
$$;

-- Renewal charges that succeeded, a batch at once (p_procs: their collected procedures, one a
-- subscription). Returns each procedure whose period is now paid with the end of that period (the
-- entitlement's validity); a part of an accumulating period still short of its price is not
-- returned: it adds to what the period has collected and the period waits for its next retry. A
-- suspended subscription's paid period starts now rather than at the missed due date (the period
-- index keeps growing, one live charge per index, counted from the new anchor); a cancelled one
-- keeps its status and gets no next charge.
create or replace function cp.subscription_charges_succeeded(p_procs cp.procedure[])
returns table (procedure_id bigint, valid_until timestamptz)
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_short bigint[];  -- subscriptions whose accumulating period is still short of its price
begin
    -- Lock in id order, so concurrent batches lock in the same order.
    perform 1 from cp.subscription s
    where s.subscription_id in (select p.subscription_id from unnest(p_procs) p)
    order by s.subscription_id for update;
    with parts as (
        update cp.subscription s set collected_in_period = s.collected_in_period + p.collected_minor
        from unnest(p_procs) p
        where s.subscription_id = p.subscription_id and p.metadata ? 'partial'
        returning s.subscription_id, s.collected_in_period < (cp.renewal_price_point(s, 0)).amount_minor as short
    ) select coalesce(array_agg(subscription_id) filter (where short), '{}') into v_short from parts;
    update cp.subscription s set next_charge_at = cp.next_retry_time(s.subscription_id)
    where s.subscription_id = any (v_short) and s.status <> 'cancelled';
    return query
    with paid as (
        select p.procedure_id, s.subscription_id, s.plan, s.period_index, z.tz,
               case when s.status = 'suspended' then cp.clock_now() at time zone z.tz else s.anchor_local end
                   as anchor_local,
               case when s.status = 'suspended' then s.period_index else s.period_base end as period_base
        from unnest(p_procs) p
        join cp.subscription s on s.subscription_id = p.subscription_id
        cross join lateral (select cp.subscriber_timezone(s.subscriber_id) as tz) z
        where s.subscription_id <> all (v_short)
    ), periods as (
        select x.*, cp.period_start(x.anchor_local, x.plan, x.period_index + 1 - x.period_base, x.tz) as paid_through
        from paid x
    ), advanced as (
        update cp.subscription s
        set anchor_local = x.anchor_local,
            period_base = x.period_base,
            period_index = x.period_index + 1,
            paid_through = x.paid_through,
            next_charge_at = case when s.status = 'cancelled' then null
                                  else cp.first_attempt_time(s.subscription_id, x.paid_through) end,
            status = case when s.status = 'cancelled' then s.status else 'active' end,
            retry_level = 0,
            collected_in_period = 0
        from periods x
        where s.subscription_id = x.subscription_id
        returning x.procedure_id, x.paid_through
    )
    select a.procedure_id, a.paid_through from advanced a;
end
$$;

-- Renewal charges that failed for good, a batch at once (p_procs: their failed procedures, each with
-- its reason): a permanent reason cancels; otherwise each subscription moves along retrying → grace →
-- suspended → cancelled by the age of its unpaid period, one legal step at a time so every
-- intermediate state is recorded, and the product's policy picks its next attempt.
create or replace function cp.subscription_charges_failed(p_procs cp.procedure[]) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_path cp.subscription_status[] := array['active', 'retrying', 'grace', 'suspended', 'cancelled'];
    v_ids bigint[];
    v_targets cp.subscription_status[];
    v_reasons text[];
    v_cancelled bigint[];
    v_cancel_reasons text[];
begin
    -- Lock in id order, so concurrent batches lock in the same order; cancelled and not yet
    -- confirmed subscriptions are left alone.
    select array_agg(s.subscription_id order by s.subscription_id), array_agg(p.reason order by s.subscription_id)
    into v_ids, v_reasons
    from (select * from cp.subscription
          where subscription_id in (select subscription_id from unnest(p_procs))
          order by subscription_id for update) s
    join unnest(p_procs) p on p.subscription_id = s.subscription_id
    where s.status not in ('cancelled', 'pending_optin');
    if v_ids is null then
        return;
    end if;

    with stopped as (
        update cp.subscription s
        set status = 'cancelled', cancel_reason = f.reason, cancelled_at = cp.clock_now(), next_charge_at = null
        from unnest(v_ids, v_reasons) as f(subscription_id, reason)
        where s.subscription_id = f.subscription_id
          and f.reason in (select reason from cp.failure_reason where permanent)
        returning s.subscription_id, f.reason
    ) select array_agg(subscription_id order by subscription_id), array_agg(reason order by subscription_id)
      into v_cancelled, v_cancel_reasons from stopped;

    -- Where each one is heading, by the age of its unpaid period under its carrier's rules.
    select array_agg(t.subscription_id order by t.subscription_id), array_agg(t.target order by t.subscription_id)
    into v_ids, v_targets
    from (
        with carrier_rules as materialized (  -- once per carrier, not once per subscription
            select c.carrier_id, make_interval(days => (r.rules->>'cancel_after_days')::int) as cancel_after,
                   make_interval(days => (r.rules->>'grace_days')::int) as suspend_after
            from (select distinct b.carrier_id from cp.subscription s join cp.subscriber b using (subscriber_id)
                  where s.subscription_id = any (v_ids)) c
            cross join lateral (select cp.effective_rules(c.carrier_id) as rules) r
        )
        select s.subscription_id,
               case when a.age >= r.cancel_after then 'cancelled'
                    when a.age >= r.suspend_after then 'suspended'
                    when a.age >= interval '1 day' then 'grace'
                    else 'retrying' end::cp.subscription_status as target
        from cp.subscription s
        join cp.subscriber b using (subscriber_id)
        join carrier_rules r on r.carrier_id = b.carrier_id
        cross join lateral (
            select cp.clock_now() - coalesce(s.paid_through, (select min(created_at) from cp.procedure x
                                                              where x.subscription_id = s.subscription_id)) as age
        ) a
        where s.subscription_id = any (v_ids) and s.status <> 'cancelled'
    ) t;
    for i in 2 .. array_length(v_path, 1) loop
        update cp.subscription s
        set status = v_path[i],
            cancel_reason = case when v_path[i] = 'cancelled' then 'unpaid' end,
            cancelled_at = case when v_path[i] = 'cancelled' then cp.clock_now() end,
            next_charge_at = case when v_path[i] = 'cancelled' then null else s.next_charge_at end
        from unnest(v_ids, v_targets) as t(subscription_id, target)
        where s.subscription_id = t.subscription_id and s.status = v_path[i - 1]
          and array_position(v_path, t.target) >= i;
    end loop;
    select v_cancelled || array_agg(t.subscription_id order by t.subscription_id),
           v_cancel_reasons || array_agg('unpaid'::text)
    into v_cancelled, v_cancel_reasons
    from unnest(v_ids, v_targets) as t(subscription_id, target) where t.target = 'cancelled';
    perform cp.notify_merchant(s.merchant_id, 'subscription.cancelled',
                               jsonb_build_object('id', s.subscription_id, 'reason', f.reason),
                               p_subscription_id => s.subscription_id)
    from unnest(v_cancelled, v_cancel_reasons) as f(subscription_id, reason)
    join cp.subscription s using (subscription_id)
    order by s.subscription_id;

    -- The others try again: a step down the price ladder (or the next part) after insufficient funds
    -- under those policies, at the time the product's retry timing picks.
    with retrying as (
        select s.subscription_id, s.carrier_id, s.product_id, f.reason from cp.subscription s
        join unnest(p_procs) f on f.subscription_id = s.subscription_id
        where s.subscription_id = any (v_ids) and s.status <> 'cancelled'
    ), policy as materialized (  -- once per carrier and product
        select o.carrier_id, o.product_id, cp.retry_policy(o.carrier_id, o.product_id) as retry_policy
        from (select distinct carrier_id, product_id from retrying) o
    ), next_try as (
        select * from cp.next_retry_times(array(select subscription_id from retrying))
    )
    update cp.subscription s
    set retry_level = s.retry_level + case when r.reason in (select reason from cp.failure_reason where steps_down)
                                                and o.retry_policy in ('step_down', 'accumulate')
                                           then 1 else 0 end,
        next_charge_at = n.retry_at
    from retrying r
    join policy o using (carrier_id, product_id)
    join next_try n using (subscription_id)
    where s.subscription_id = r.subscription_id;
end
$$;
