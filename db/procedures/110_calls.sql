-- Carrier calls: queueing them (one statement per table for one call or thousands) and the document an
-- adapter receives for each.

-- Queue carrier calls of one operation, one per element of p_procedure_ids (with its p_params, and
-- its p_available_at or now): the call, whose correlator is derived from its id (a repeat of the call
-- carries the same correlator, a new attempt a new one), and its row in cp.call_queue. One statement
-- per table however many calls: a purchase queues one, a batch of renewals thousands. Returns the
-- call ids in the order of p_procedure_ids.
create or replace function cp.queue_calls(p_procedure_ids bigint[], p_operation text, p_params jsonb[],
                                          p_available_at timestamptz[] default null, p_attempt integer default 1)
returns bigint[]
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_missing text;
    v_call_ids bigint[];
begin
    select c.code into v_missing
    from cp.procedure p join cp.carrier c on c.carrier_id = p.carrier_id
    where p.procedure_id = any (p_procedure_ids) and c.spec->'operations'->p_operation is null
    limit 1;
    if v_missing is not null then
        perform cp.fail('CP071', format('carrier %s does not offer operation %s', v_missing, p_operation));
    end if;
    with planned as materialized (
        select nextval(pg_get_serial_sequence('cp.carrier_call', 'call_id')) as call_id, o.*
        from (select u.n, p.procedure_id, p.carrier_id, c.spec, u.params, u.available_at, s.timezone
              from unnest(p_procedure_ids, p_params, p_available_at) with ordinality
                   as u(procedure_id, params, available_at, n)
              join cp.procedure p on p.procedure_id = u.procedure_id
              join cp.carrier c on c.carrier_id = p.carrier_id
              join cp.subscriber s on s.subscriber_id = p.subscriber_id
              order by u.n) o
    ), calls as (
        insert into cp.carrier_call (call_id, procedure_id, carrier_id, operation, pattern, safe_to_repeat,
                                     attempt, correlator, params, created_at)
        overriding system value
        select x.call_id, x.procedure_id, x.carrier_id, p_operation,
               coalesce(x.spec->'operations'->p_operation->>'pattern', 'sync'), cp.may_send_again(x.spec, p_operation),
               p_attempt, 'cp-' || x.call_id, coalesce(x.params, '{}'), cp.clock_now()
        from planned x
        order by x.call_id
        returning call_id
    ), queued as (
        -- A charge is handed to an adapter only inside its subscriber's charging hours (adapter.claim_calls).
        insert into cp.call_queue (call_id, carrier_id, available_at, charging_hours, timezone)
        select x.call_id, x.carrier_id, coalesce(x.available_at, cp.clock_now()), p_operation = 'charge',
               case when p_operation = 'charge' then x.timezone end
        from planned x join calls using (call_id)
        order by x.call_id
    )
    select array_agg(x.call_id order by x.n) into v_call_ids
    from planned x;  -- queued runs regardless: data-modifying CTEs always execute
    return v_call_ids;
end
$$;

-- Queue one carrier call for a procedure (cp.queue_calls for one).
create or replace function cp.queue_call(p_procedure_id bigint, p_operation text, p_params jsonb,
                                         p_available_at timestamptz default null, p_attempt integer default 1)
returns bigint
language sql
set search_path = pg_catalog, cp, pg_temp
as $$
    select (cp.queue_calls(array[p_procedure_id], p_operation, array[p_params], array[p_available_at], p_attempt))[1]
$$;

-- The call document adapters receive: what the connector needs to talk to the carrier.
create or replace function cp.call_document(p_call cp.carrier_call) returns jsonb
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select p_call.params || jsonb_build_object(
        'call_id', p_call.call_id, 'procedure_id', p_call.procedure_id,
        'carrier', (select code from cp.carrier where carrier_id = p_call.carrier_id),
        'operation', p_call.operation, 'pattern', p_call.pattern, 'attempt', p_call.attempt,
        'correlator', p_call.correlator)
$$;
