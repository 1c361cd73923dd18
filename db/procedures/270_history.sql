-- History shipping: how shippers claim the outboxes (cp.event, cp.carrier_log) without losing,
-- duplicating or reordering an aggregate's rows, and the lag report. docs/history.md explains
-- the protocol; the Python shipper (carrierpay/history/shipper.py) only calls these functions.
--
-- Ordering: every outbox row belongs to an aggregate (a carrier_log row to its carrier call),
-- and every aggregate to one of 64 buckets. A shipper claims rows only from buckets whose
-- transaction-level advisory lock it holds, so at any moment one shipper at most ships a
-- given aggregate, and always its oldest rows first. Rows are claimed FOR UPDATE SKIP LOCKED
-- in id order and deleted by the same transaction after the store confirmed the write.

-- Bucket (0..63) of an aggregate; the advisory lock (class 1129334868, "CPHT") guards it.
create or replace function cp.history_bucket(p_aggregate_type text, p_aggregate_id bigint) returns integer
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select (abs(hashtextextended(p_aggregate_type || ':' || p_aggregate_id::text, 0)) % 64)::integer
$$;

-- A jsonb member as bigint when it holds an integer, else null (a bad payload must not stop shipping).
create or replace function cp.jsonb_bigint(p_doc jsonb, p_key text) returns bigint
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select case when (p_doc ->> p_key) ~ '^[0-9]{1,18}$' then (p_doc ->> p_key)::bigint end
$$;

-- The payment, procedure, subscription and subscriber an outbox row belongs to, so that a
-- timeline can find a payment's carrier calls and logs and a subscription's charges.
create or replace function cp.history_correlation(
    p_aggregate_type text, p_aggregate_id bigint, p_payload jsonb,
    out procedure_id bigint, out payment_id bigint, out subscription_id bigint, out subscriber_id bigint)
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    with direct as (
        select
            case p_aggregate_type
                when 'procedure' then p_aggregate_id
                when 'carrier_call' then coalesce(
                    cp.jsonb_bigint(p_payload, 'procedure_id'),
                    (select c.procedure_id from cp.carrier_call c where c.call_id = p_aggregate_id))
                else cp.jsonb_bigint(p_payload, 'procedure_id')
            end as procedure_id,
            case p_aggregate_type
                when 'subscription' then p_aggregate_id
                else cp.jsonb_bigint(p_payload, 'subscription_id')
            end as subscription_id,
            case p_aggregate_type
                when 'subscriber' then p_aggregate_id
                else cp.jsonb_bigint(p_payload, 'subscriber_id')
            end as subscriber_id
    )
    select d.procedure_id,
           -- a refund's timeline belongs to the payment it refunds
           coalesce(p.parent_id, d.procedure_id),
           coalesce(d.subscription_id, p.subscription_id, parent.subscription_id),
           coalesce(d.subscriber_id, p.subscriber_id, s.subscriber_id)
    from direct d
    left join cp.procedure p on p.procedure_id = d.procedure_id
    left join cp.procedure parent on parent.procedure_id = p.parent_id
    left join cp.subscription s on s.subscription_id = coalesce(d.subscription_id, p.subscription_id)
$$;

-- Walk the buckets of the oldest unshipped rows (one element per row, in id order) and lock
-- those no other shipper holds, until the held buckets cover p_limit rows; returns them.
-- Rows of buckets held elsewhere are stepped over, so concurrent shippers spread out instead
-- of all waiting on the buckets of the very oldest rows.
create or replace function cp.history_lock_buckets(p_row_buckets integer[], p_limit integer) returns integer[]
language plpgsql volatile
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_bucket integer;
    v_tried integer[] := '{}';
    v_held integer[] := '{}';
    v_rows integer := 0;
begin
    foreach v_bucket in array p_row_buckets loop
        if v_bucket = any(v_held) then
            v_rows := v_rows + 1;
        elsif not v_bucket = any(v_tried) then
            v_tried := v_tried || v_bucket;
            if pg_catalog.pg_try_advisory_xact_lock(1129334868, v_bucket) then
                v_held := v_held || v_bucket;
                v_rows := v_rows + 1;
            end if;
        end if;
        exit when v_rows >= p_limit;
    end loop;
    return v_held;
end
$$;

-- Claim up to p_limit events (locked until the caller's transaction ends), oldest first, with correlation.
create or replace function adapter.claim_history_events(p_limit integer)
returns table (event_id bigint, aggregate_type text, aggregate_id bigint, kind text,
               occurred_at timestamptz, recorded_at timestamptz, payload jsonb,
               procedure_id bigint, payment_id bigint, subscription_id bigint, subscriber_id bigint)
language plpgsql volatile security definer
set search_path = pg_catalog, cp, pg_temp
as $$
#variable_conflict use_column
declare
    v_held integer[];
begin
    -- Look several batches deep so a second shipper finds buckets the first one does not hold.
    select cp.history_lock_buckets(coalesce(array_agg(r.bucket order by r.event_id), '{}'), p_limit)
      into v_held
      from (select cp.history_bucket(e.aggregate_type, e.aggregate_id) as bucket, e.event_id
              from cp.event e order by e.event_id limit p_limit * 16) r;
    if cardinality(v_held) = 0 then
        return;
    end if;
    return query
        with claimed as (
            select e.event_id, e.aggregate_type, e.aggregate_id, e.kind, e.occurred_at, e.recorded_at, e.payload
              from cp.event e
             where cp.history_bucket(e.aggregate_type, e.aggregate_id) = any(v_held)
             order by e.event_id
             limit p_limit
               for update skip locked
        )
        select c.event_id, c.aggregate_type, c.aggregate_id, c.kind, c.occurred_at, c.recorded_at, c.payload,
               r.procedure_id, r.payment_id, r.subscription_id, r.subscriber_id
          from claimed c
         cross join lateral cp.history_correlation(c.aggregate_type, c.aggregate_id, c.payload) r
         order by c.event_id;
end
$$;

-- Claim up to p_limit carrier log rows, oldest first, each in its carrier call's bucket.
create or replace function adapter.claim_carrier_logs(p_limit integer)
returns table (log_id bigint, call_id bigint, carrier_id integer, operation text, outcome text,
               reason text, carrier_code text, latency_ms integer, request jsonb, response jsonb,
               logged_at timestamptz,
               procedure_id bigint, payment_id bigint, subscription_id bigint, subscriber_id bigint)
language plpgsql volatile security definer
set search_path = pg_catalog, cp, pg_temp
as $$
#variable_conflict use_column
declare
    v_held integer[];
begin
    select cp.history_lock_buckets(coalesce(array_agg(r.bucket order by r.log_id), '{}'), p_limit)
      into v_held
      from (select cp.history_bucket('carrier_call', l.call_id) as bucket, l.log_id
              from cp.carrier_log l order by l.log_id limit p_limit * 16) r;
    if cardinality(v_held) = 0 then
        return;
    end if;
    return query
        with claimed as (
            select l.log_id, l.call_id, l.procedure_id, l.carrier_id, l.operation, l.outcome, l.reason,
                   l.carrier_code, l.latency_ms, l.request, l.response, l.logged_at
              from cp.carrier_log l
             where cp.history_bucket('carrier_call', l.call_id) = any(v_held)
             order by l.log_id
             limit p_limit
               for update skip locked
        )
        select c.log_id, c.call_id, c.carrier_id, c.operation, c.outcome, c.reason, c.carrier_code,
               c.latency_ms, c.request, c.response, c.logged_at,
               r.procedure_id, r.payment_id, r.subscription_id, r.subscriber_id
          from claimed c
         cross join lateral cp.history_correlation('procedure', c.procedure_id, '{}'::jsonb) r
         order by c.log_id;
end
$$;

-- Forget what the store confirmed (rows this transaction claimed) and count it for p_shipper.
create or replace function adapter.complete_history_batch(p_shipper text, p_event_ids bigint[], p_log_ids bigint[])
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_events integer;
    v_logs integer;
begin
    -- The merchant's timeline (api.payment, api.subscription) outlives the outbox: keep its compact part.
    with shipped as (
        delete from cp.event e where e.event_id = any(p_event_ids)
        returning e.event_id, e.aggregate_type, e.aggregate_id, e.kind, e.occurred_at, e.payload
    ), kept as (
        insert into cp.timeline_entry (aggregate_type, aggregate_id, event_id, occurred_at, kind, to_status)
        select s.aggregate_type, s.aggregate_id, s.event_id, s.occurred_at, s.kind, s.payload->>'to'
          from shipped s
         where s.aggregate_type in ('procedure', 'subscription')
        on conflict do nothing
    )
    select count(*) into v_events from shipped;
    delete from cp.carrier_log l where l.log_id = any(p_log_ids);
    get diagnostics v_logs = row_count;
    insert into cp.history_shipper as s (shipper, heartbeat_at, last_shipped_at, events_shipped, logs_shipped, batches)
    values (p_shipper, clock_timestamp(), clock_timestamp(), v_events, v_logs, 1)
    on conflict (shipper) do update
       set heartbeat_at = excluded.heartbeat_at,
           last_shipped_at = excluded.last_shipped_at,
           events_shipped = s.events_shipped + excluded.events_shipped,
           logs_shipped = s.logs_shipped + excluded.logs_shipped,
           batches = s.batches + 1;
end
$$;

-- Record that p_shipper started (or is alive) and, when p_error is given, why it could not ship.
create or replace function adapter.report_history_shipper(p_shipper text, p_host text, p_pid integer,
                                                          p_error text default null)
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    insert into cp.history_shipper as s (shipper, host, pid, last_error, last_error_at)
    values (p_shipper, p_host, p_pid, p_error, case when p_error is not null then clock_timestamp() end)
    on conflict (shipper) do update
       set host = excluded.host,
           pid = excluded.pid,
           heartbeat_at = clock_timestamp(),
           last_error = coalesce(excluded.last_error, s.last_error),
           last_error_at = coalesce(excluded.last_error_at, s.last_error_at);
end
$$;

-- The status timeline of a payment or subscription as merchants read it, whether or not it was shipped.
create or replace function cp.status_timeline(p_aggregate_type text, p_aggregate_id bigint) returns jsonb
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select coalesce(jsonb_agg(jsonb_build_object('at', t.occurred_at, 'event', t.kind, 'to', t.to_status)
                              order by t.event_id), '[]'::jsonb)
      from (select e.event_id, e.occurred_at, e.kind, e.payload->>'to' as to_status
              from cp.event e
             where e.aggregate_type = p_aggregate_type and e.aggregate_id = p_aggregate_id
            union all
            select k.event_id, k.occurred_at, k.kind, k.to_status
              from cp.timeline_entry k
             where k.aggregate_type = p_aggregate_type and k.aggregate_id = p_aggregate_id) t
$$;

-- How far the history store is behind: per outbox, what waits, how old the oldest row is (real time).
-- Bounded whatever the backlog, as a scrape reads it: the rows waiting are counted exactly up to
-- 10,000 (by primary key), and past that are the span of waiting ids (newest - oldest + 1), an upper
-- bound (ids are a sequence; rows shipped out of order and ids rolled back in between count too), with
-- unshipped_exact false. The oldest row is the one with the lowest id.
create or replace view report.history_lag as
select o.outbox,
       o.unshipped,
       o.oldest_id,
       o.oldest_at,
       coalesce(now() - o.oldest_at, interval '0') as oldest_age,
       s.last_shipped_at,
       s.last_error,
       s.last_error_at,
       o.unshipped_exact
  from (select 'event'::text as outbox,
               case when n.few <= 10000 then n.few else b.newest - b.oldest + 1 end as unshipped,
               b.oldest as oldest_id,
               (select e.recorded_at from cp.event e where e.event_id = b.oldest) as oldest_at,
               n.few <= 10000 as unshipped_exact
          from (select min(e.event_id) as oldest, max(e.event_id) as newest from cp.event e) b
         cross join (select count(*) as few
                       from (select e.event_id from cp.event e order by e.event_id limit 10001) x) n
        union all
        select 'carrier_log',
               case when n.few <= 10000 then n.few else b.newest - b.oldest + 1 end,
               b.oldest,
               (select l.logged_at from cp.carrier_log l where l.log_id = b.oldest),
               n.few <= 10000
          from (select min(l.log_id) as oldest, max(l.log_id) as newest from cp.carrier_log l) b
         cross join (select count(*) as few
                       from (select l.log_id from cp.carrier_log l order by l.log_id limit 10001) x) n) o
 cross join (select max(h.last_shipped_at) as last_shipped_at,
                    (array_agg(h.last_error order by h.last_error_at desc nulls last))[1] as last_error,
                    max(h.last_error_at) as last_error_at
               from cp.history_shipper h) s0
 -- an error is news only until some shipper succeeds after it
 cross join lateral (select s0.last_shipped_at,
                            case when s0.last_error_at > coalesce(s0.last_shipped_at, '-infinity') then s0.last_error end
                                as last_error,
                            case when s0.last_error_at > coalesce(s0.last_shipped_at, '-infinity') then s0.last_error_at end
                                as last_error_at) s;
comment on view report.history_lag is
    'History shipping lag: unshipped outbox rows (exact up to 10,000, else an upper bound) and the age of the '
    'oldest, per outbox; the last shipper error while no shipment succeeded after it';

-- Every shipper that ever ran, its progress and its last error.
create or replace view report.history_shippers as
select h.shipper, h.host, h.pid, h.started_at, h.heartbeat_at, h.last_shipped_at,
       h.events_shipped, h.logs_shipped, h.batches, h.last_error, h.last_error_at
  from cp.history_shipper h;

