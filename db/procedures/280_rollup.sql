-- Hourly rollups of settled carrier calls, folded past a watermark so that no payment transaction
-- writes them and no reader scans the payment tables. sched.fold_rollups (each scheduler tick) reads
-- the calls after cp.rollup_state.folded_through in id order, by primary key; it stops before the
-- first call younger than p_patience that has not settled yet, so the watermark trails the calls in
-- flight by seconds. Older unsettled calls (unknown, awaiting a callback, queued for later) and ids
-- not visible yet (a transaction still open, or rolled back) are passed and remembered in
-- cp.rollup_straggler; each is folded once, when it settles. A call counts in the hour (and minute)
-- it settled.

-- A straggler is re-checked at every fold while it is young (passed since the last full check); the
-- whole remembered set (mostly unknown calls waiting for their next reconciliation turn, minutes to a
-- day away) only every p_recheck of business time, so a fold costs the new calls, not the backlog.
drop function if exists sched.fold_rollups(integer, interval);

-- Fold the calls settled since the last fold into cp.rollup_hour, cp.rollup_carrier_hour,
-- cp.rollup_procedure and cp.rollup_minute, and the subscription count deltas into
-- cp.subscription_count; returns how
-- many calls were folded. One statement reads and writes everything, so each call is seen once, in
-- one snapshot, either as settled (folded) or as a straggler (folded later).
create or replace function sched.fold_rollups(p_limit integer default 50000, p_patience interval default '2 minutes',
                                              p_recheck interval default '1 minute')
returns integer
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_now timestamptz := cp.clock_now();
    v_offset interval := cp.clock_now() - pg_catalog.now();
    v_from bigint;
    v_max bigint;
    v_cut bigint;
    v_to bigint;
    v_folded integer;
    v_checked timestamptz;
    v_full boolean;
begin
    select folded_through, stragglers_checked_at into v_from, v_checked from cp.rollup_state for update;  -- one folder at a time
    v_full := v_checked is null or v_checked <= v_now - p_recheck;
    -- The fold walks call ids one by one: start where this database's ids start (a partition of a
    -- sharded deployment draws them from its own block, carrierpay/migrate.py), not at 1.
    v_from := greatest(v_from, (select q.seqmin - 1 from pg_catalog.pg_sequence q
                                where q.seqrelid = pg_catalog.pg_get_serial_sequence('cp.carrier_call', 'call_id')::regclass));
    select max(s.call_id) into v_max
    from (select c.call_id from cp.carrier_call c where c.call_id > v_from order by c.call_id limit p_limit) s;
    v_to := v_from;
    if v_max is not null then
        select min(c.call_id) into v_cut from cp.carrier_call c
        where c.call_id > v_from and c.call_id <= v_max and c.status not in ('done', 'failed')
          and c.created_at > v_now - p_patience;
        v_to := coalesce(v_cut - 1, v_max);
    end if;
    with span as (
        select g.id, c.status in ('done', 'failed') as settled
        from pg_catalog.generate_series(v_from + 1, v_to) g(id)
        left join cp.carrier_call c on c.call_id = g.id
    ), passed as (
        insert into cp.rollup_straggler (call_id, since)
        select s.id, v_now from span s where s.settled is not true
        on conflict do nothing
    ), late as (
        delete from cp.rollup_straggler s using cp.carrier_call c
        where c.call_id = s.call_id and s.call_id <= v_from and c.status in ('done', 'failed')
          and (v_full or s.since >= v_checked)
        returning s.call_id
    ), ids as (
        select s.id as call_id from span s where s.settled
        union all
        select l.call_id from late l
    ), facts as (
        select c.carrier_id, coalesce(p.merchant_id, 0) as merchant_id, coalesce(p.product_id, 0) as product_id,
               c.operation, coalesce(c.outcome, c.status::text) as outcome, p.currency, c.finished_at,
               case when c.outcome = 'succeeded' and p.kind = 'charge' and c.operation = 'charge' then p.collected_minor
                    when c.outcome = 'succeeded' and p.kind = 'refund' and c.operation = 'refund' then p.amount_minor
                    else 0 end as amount_minor,
               (c.operation = 'charge' and p.period_index >= 1) as renewal,
               (c.operation = 'charge' and p.subscription_id is not null) as subscription_call,
               (c.operation = 'charge' and c.outcome = 'succeeded' and p.subscription_id is not null
                and p.price_point_id is distinct from s.price_point_id) as step_down,
               c.reason in ('transient', 'unreachable', 'unknown') or c.outcome = 'unknown' as error,
               greatest(0, extract(epoch from c.finished_at - (c.sent_at + v_offset)) * 1000)::bigint as latency_ms
        from ids
        join cp.carrier_call c on c.call_id = ids.call_id
        join cp.procedure p on p.procedure_id = c.procedure_id
        left join cp.subscription s on s.subscription_id = p.subscription_id
    ), hours as (
        insert into cp.rollup_hour as h (hour, carrier_id, merchant_id, product_id, operation, outcome, currency,
                                         calls, amount_minor, renewals, subscription_calls, step_downs,
                                         latency_ms_sum, latency_le_100ms, latency_le_500ms, latency_le_1s,
                                         latency_le_5s, latency_over_5s)
        select date_trunc('hour', f.finished_at, 'UTC'), f.carrier_id, f.merchant_id, f.product_id, f.operation,
               f.outcome, f.currency, count(*), sum(f.amount_minor), count(*) filter (where f.renewal),
               count(*) filter (where f.subscription_call), count(*) filter (where f.step_down),
               coalesce(sum(f.latency_ms), 0),
               count(*) filter (where f.latency_ms <= 100), count(*) filter (where f.latency_ms <= 500),
               count(*) filter (where f.latency_ms <= 1000), count(*) filter (where f.latency_ms <= 5000),
               count(*) filter (where f.latency_ms > 5000 or f.latency_ms is null)
        from facts f
        group by 1, 2, 3, 4, 5, 6, 7
        on conflict (hour, carrier_id, merchant_id, product_id, operation, outcome, currency) do update
        set calls = h.calls + excluded.calls, amount_minor = h.amount_minor + excluded.amount_minor,
            renewals = h.renewals + excluded.renewals,
            subscription_calls = h.subscription_calls + excluded.subscription_calls,
            step_downs = h.step_downs + excluded.step_downs, latency_ms_sum = h.latency_ms_sum + excluded.latency_ms_sum,
            latency_le_100ms = h.latency_le_100ms + excluded.latency_le_100ms,
            latency_le_500ms = h.latency_le_500ms + excluded.latency_le_500ms,
            latency_le_1s = h.latency_le_1s + excluded.latency_le_1s,
            latency_le_5s = h.latency_le_5s + excluded.latency_le_5s,
            latency_over_5s = h.latency_over_5s + excluded.latency_over_5s
    ), carrier_hours as (
        insert into cp.rollup_carrier_hour as h (hour, carrier_id, operation, outcome, currency, calls, amount_minor,
                                                 renewals, subscription_calls, step_downs)
        select date_trunc('hour', f.finished_at, 'UTC'), f.carrier_id, f.operation, f.outcome, f.currency, count(*),
               sum(f.amount_minor), count(*) filter (where f.renewal), count(*) filter (where f.subscription_call),
               count(*) filter (where f.step_down)
        from facts f
        group by 1, 2, 3, 4, 5
        on conflict (hour, carrier_id, operation, outcome, currency) do update
        set calls = h.calls + excluded.calls, amount_minor = h.amount_minor + excluded.amount_minor,
            renewals = h.renewals + excluded.renewals,
            subscription_calls = h.subscription_calls + excluded.subscription_calls,
            step_downs = h.step_downs + excluded.step_downs
    ), procedures as (
        -- A charge or refund counts once, by its final status, when its latest charge (refund) call is folded.
        insert into cp.rollup_procedure as r (carrier_id, merchant_id, kind, outcome, currency, procedures,
                                              subscription_charges, renewals, step_downs, collected_minor,
                                              amount_minor)
        select p.carrier_id, coalesce(p.merchant_id, 0), p.kind,
               case when p.status = 'failed' then 'failed' else 'succeeded' end, p.currency, count(*),
               count(*) filter (where p.subscription_id is not null),
               count(*) filter (where p.subscription_id is not null and p.period_index >= 1),
               count(*) filter (where p.subscription_id is not null
                                and p.price_point_id is distinct from s.price_point_id),
               coalesce(sum(p.collected_minor), 0), coalesce(sum(p.amount_minor), 0)
        from ids
        join cp.carrier_call c on c.call_id = ids.call_id
        join cp.procedure p on p.procedure_id = c.procedure_id
        left join cp.subscription s on s.subscription_id = p.subscription_id
        where p.kind in ('charge', 'refund') and c.operation = p.kind::text
          and p.status in ('succeeded', 'partially_refunded', 'refunded', 'failed')
          and not exists (select 1 from cp.carrier_call n
                          where n.procedure_id = c.procedure_id and n.call_id > c.call_id and n.operation = c.operation)
        group by 1, 2, 3, 4, 5
        on conflict (carrier_id, merchant_id, kind, outcome, currency) do update
        set procedures = r.procedures + excluded.procedures,
            subscription_charges = r.subscription_charges + excluded.subscription_charges,
            renewals = r.renewals + excluded.renewals, step_downs = r.step_downs + excluded.step_downs,
            collected_minor = r.collected_minor + excluded.collected_minor,
            amount_minor = r.amount_minor + excluded.amount_minor
    ), minutes as (
        insert into cp.rollup_minute as m (minute, carrier_id, calls, succeeded, failed, errors, latency_ms_sum)
        select date_trunc('minute', f.finished_at), f.carrier_id, count(*),
               count(*) filter (where f.outcome = 'succeeded'), count(*) filter (where f.outcome = 'failed'),
               count(*) filter (where f.error), coalesce(sum(f.latency_ms), 0)
        from facts f
        where f.finished_at >= v_now - interval '2 days'
        group by 1, 2
        on conflict (carrier_id, minute) do update
        set calls = m.calls + excluded.calls, succeeded = m.succeeded + excluded.succeeded,
            failed = m.failed + excluded.failed, errors = m.errors + excluded.errors,
            latency_ms_sum = m.latency_ms_sum + excluded.latency_ms_sum
    )
    select count(*) into v_folded from facts;

    update cp.rollup_state
    set folded_through = v_to, folded_at = v_now,
        stragglers_checked_at = case when v_full then v_now else stragglers_checked_at end;
    -- What subscription statements changed since the last fold (cp.tg_subscription__counts_created and
    -- _changed), into the counts; rows of transactions still open stay for the next fold.
    with moved as (delete from cp.subscription_count_delta returning *)
    insert into cp.subscription_count as c (carrier_id, merchant_id, status, unpaid, subscriptions)
    select m.carrier_id, m.merchant_id, m.status, m.unpaid, sum(m.subscriptions)
    from moved m group by 1, 2, 3, 4
    on conflict (carrier_id, merchant_id, status, unpaid) do update
    set subscriptions = c.subscriptions + excluded.subscriptions;
    -- The minute rollup serves the last minutes only; ids that never appeared were rolled back.
    delete from cp.rollup_minute where minute < v_now - interval '2 days';
    delete from cp.rollup_straggler s
    where s.since < v_now - interval '1 day' and not exists (select 1 from cp.carrier_call c where c.call_id = s.call_id);
    return v_folded;
end
$$;

-- Settled carrier calls per hour (UTC), carrier, merchant, product, operation, outcome and currency,
-- from the rollup: filter on `hour` for a time range. amount_minor is what succeeded charges
-- collected and succeeded refunds gave back; latency buckets are cumulative (le = at most).
create or replace view report.hourly_calls as
select h.hour, k.code as carrier, m.code as merchant, pr.code as product, h.operation, h.outcome, h.currency,
       h.calls, h.amount_minor, h.renewals, h.subscription_calls, h.step_downs, h.latency_ms_sum,
       h.latency_le_100ms, h.latency_le_500ms, h.latency_le_1s, h.latency_le_5s, h.latency_over_5s
from cp.rollup_hour h
join cp.carrier k on k.carrier_id = h.carrier_id
left join cp.merchant m on m.merchant_id = h.merchant_id
left join cp.product pr on pr.product_id = h.product_id;

-- Charge attempts and successes per hour and carrier, with the success rate (the dashboard's chart).
create or replace view report.hourly_success as
select h.hour, k.code as carrier,
       sum(h.calls) filter (where h.outcome in ('succeeded', 'failed'))::bigint as attempts,
       sum(h.calls) filter (where h.outcome = 'succeeded')::bigint as succeeded,
       sum(h.calls) filter (where h.outcome = 'failed')::bigint as failed,
       round(100.0 * sum(h.calls) filter (where h.outcome = 'succeeded')
             / nullif(sum(h.calls) filter (where h.outcome in ('succeeded', 'failed')), 0), 1) as success_pct,
       sum(h.renewals) filter (where h.outcome = 'succeeded')::bigint as renewals,
       (sum(h.subscription_calls) - sum(h.subscription_calls) filter (where h.outcome = 'succeeded'))::bigint
           as retries,
       sum(h.step_downs)::bigint as step_downs
from cp.rollup_carrier_hour h join cp.carrier k on k.carrier_id = h.carrier_id
where h.operation = 'charge'
group by h.hour, k.code;

-- Collected, refunded and net revenue per hour, carrier and currency, from the rollup.
create or replace view report.hourly_revenue as
select h.hour, k.code as carrier, h.currency,
       coalesce(sum(h.amount_minor) filter (where h.operation = 'charge'), 0)::bigint as collected_minor,
       coalesce(sum(h.amount_minor) filter (where h.operation = 'refund'), 0)::bigint as refunded_minor,
       (coalesce(sum(h.amount_minor) filter (where h.operation = 'charge'), 0)
        - coalesce(sum(h.amount_minor) filter (where h.operation = 'refund'), 0))::bigint as net_minor,
       coalesce(sum(h.calls) filter (where h.operation = 'refund' and h.outcome = 'succeeded'), 0)::bigint as refunds
from cp.rollup_carrier_hour h join cp.carrier k on k.carrier_id = h.carrier_id
where h.outcome = 'succeeded' and h.operation in ('charge', 'refund')
group by h.hour, k.code, h.currency;

-- How far the fold has come: the last call id folded, when (business time), and the calls it passed
-- before they settled.
create or replace view report.rollup_progress as
select s.folded_through, s.folded_at, (select count(*) from cp.rollup_straggler) as stragglers
from cp.rollup_state s;
