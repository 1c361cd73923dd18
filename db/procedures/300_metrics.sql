-- What the database collector of `carrierpay metrics serve` reads on every scrape (role
-- carrierpay_reporter): each view reads small tables or partial indexes only (the queue, the
-- unsettled calls, the pending notifications, the minute rollup), never a payment table whole.
-- Ages are in seconds of business time (cp.clock_now(), spelled out: a reader may not call cp).

-- Per carrier: the queue (ready, later, leased; the oldest ready call's age), the last five minutes
-- of settled calls from the minute rollup, and the breaker.
create or replace view report.metrics_carriers as
with clock as (
    select coalesce((select coalesce(o.held_at, pg_catalog.now() + o.offset_by) from cp.clock_offset o),
                    pg_catalog.now()) as at
), queue as (
    select q.carrier_id,
           count(*) filter (where q.lease_until is null and q.available_at <= clock.at) as ready,
           count(*) filter (where q.lease_until is null and q.available_at > clock.at) as later,
           count(*) filter (where q.lease_until is not null) as leased,
           coalesce(extract(epoch from clock.at - min(q.available_at)
                            filter (where q.lease_until is null and q.available_at <= clock.at)), 0) as oldest_ready_s
    from cp.call_queue q cross join clock
    group by q.carrier_id, clock.at
), recent as (
    select r.carrier_id, sum(r.calls) as calls, sum(r.succeeded) as succeeded, sum(r.failed) as failed,
           sum(r.errors) as errors, sum(r.latency_ms_sum) as latency_ms_sum
    from cp.rollup_minute r cross join clock
    where r.minute >= date_trunc('minute', clock.at - interval '5 minutes')
    group by r.carrier_id
)
select k.code as carrier,
       coalesce(q.ready, 0) as queue_ready, coalesce(q.later, 0) as queue_later, coalesce(q.leased, 0) as leased,
       coalesce(q.oldest_ready_s, 0)::double precision as oldest_ready_s,
       coalesce(r.calls, 0)::bigint as calls_5m, coalesce(r.succeeded, 0)::bigint as succeeded_5m,
       coalesce(r.failed, 0)::bigint as failed_5m, coalesce(r.errors, 0)::bigint as errors_5m,
       (r.succeeded::double precision / nullif(r.succeeded + r.failed, 0)) as success_ratio_5m,
       (r.latency_ms_sum::double precision / nullif(r.calls, 0) / 1000) as mean_latency_5m_s,
       coalesce(b.state, 'closed') as breaker_state, coalesce(b.trips, 0) as breaker_trips,
       exists (select 1 from cp.claim_pause p where p.scope = 'carrier' and p.target_id = k.carrier_id) as paused,
       k.enabled
from cp.carrier k
left join queue q using (carrier_id)
left join recent r using (carrier_id)
left join cp.carrier_breaker b using (carrier_id);

-- Unknown and awaited calls per carrier, status and age band (since the call was created), and how
-- many of them are past their reconciliation time. Both statuses always carry a next_reconcile_at
-- (cleared when the call settles), so the partial index carrier_call_to_reconcile finds them without
-- reading the settled calls.
create or replace view report.metrics_unsettled_calls as
with clock as (
    select coalesce((select coalesce(o.held_at, pg_catalog.now() + o.offset_by) from cp.clock_offset o),
                    pg_catalog.now()) as at
)
select k.code as carrier, c.status::text as status,
       case when clock.at - c.created_at < interval '5 minutes' then 'under_5m'
            when clock.at - c.created_at < interval '1 hour' then '5m_to_1h'
            when clock.at - c.created_at < interval '1 day' then '1h_to_1d'
            else 'over_1d' end as age,
       count(*) as calls,
       count(*) filter (where c.next_reconcile_at < clock.at - interval '15 minutes') as overdue
from cp.carrier_call c join cp.carrier k using (carrier_id) cross join clock
where c.next_reconcile_at is not null and c.status in ('unknown', 'awaiting_result')
group by k.code, c.status, 3;

-- Webhook notifications still to deliver: how many, how many are due now, the oldest one's age,
-- and how many have been tried and failed at least once (the partial index merchant_notification_due).
create or replace view report.metrics_webhooks as
with clock as (
    select coalesce((select coalesce(o.held_at, pg_catalog.now() + o.offset_by) from cp.clock_offset o),
                    pg_catalog.now()) as at
)
select count(*) as pending,
       count(*) filter (where n.next_attempt_at <= (select at from clock)) as due,
       count(*) filter (where n.attempts > 0) as retrying,
       coalesce(extract(epoch from (select at from clock) - min(n.created_at)), 0)::double precision
           as oldest_pending_s
from cp.merchant_notification n
where n.status = 'pending';

-- The business time the dashboard's ranges are relative to (cp.clock_now(), readable by the reporter).
create or replace view report.business_time as
select coalesce((select coalesce(o.held_at, pg_catalog.now() + o.offset_by) from cp.clock_offset o),
                pg_catalog.now()) as now;
