-- The daemons' side (role carrierpay_adapter): claim carrier calls in batches, complete them in
-- batches, record callbacks, expire leases and find what needs reconciling.

-- Lease up to p_limit ready calls of a carrier to one worker. Returns one call document each.
create or replace function adapter.claim_calls(p_carrier text, p_limit integer, p_lease interval, p_worker text)
returns setof jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_carrier_id integer;
    v_granted integer;
    v_claimed integer;
begin
    select carrier_id into v_carrier_id from cp.carrier where code = p_carrier;
    if v_carrier_id is null then
        perform cp.fail('CP070', format('unknown carrier %L', p_carrier));
    end if;
    -- The carrier's calls-per-second budget is shared by every adapter process.
    v_granted := cp.take_budget(v_carrier_id, p_limit);
    if v_granted = 0 then
        return;
    end if;
    return query
    with picked as (
        select q.call_id from cp.call_queue q
        where q.carrier_id = v_carrier_id and q.lease_until is null and q.available_at <= cp.clock_now()
        order by q.available_at
        limit v_granted
        for update skip locked
    ), leased as (
        -- By primary key lookups whatever the statistics say: the queue's are usually from a moment it
        -- was nearly empty, and a join planned for one row turns quadratic for a batch.
        update cp.call_queue q set lease_until = cp.clock_now() + p_lease, worker = p_worker
        where q.call_id = any (array(select call_id from picked))
        returning q.call_id
    ), calls as (
        update cp.carrier_call c set status = 'leased', sent_at = clock_timestamp(), lease_no = c.lease_no + 1
        from leased where c.call_id = leased.call_id
        returning c.*
    ), procs as (
        update cp.procedure p set status = 'in_flight'
        where p.status = 'pending' and p.procedure_id in (select procedure_id from calls)
        returning p.procedure_id
    )
    select cp.call_document(calls::cp.carrier_call)
           || jsonb_build_object('lease_until', cp.clock_now() + p_lease, 'lease', calls.lease_no)
    from calls;  -- procs runs regardless: data-modifying CTEs always execute
    get diagnostics v_claimed = row_count;
    perform cp.return_budget(v_carrier_id, v_granted - v_claimed);
end
$$;

-- Apply a batch of carrier outcomes in one transaction, and log each interaction. The plain charge
-- outcomes (most of any batch) are settled together by cp.settle_charges; the rest one by one.
-- An adapter that lost its connection cannot tell whether its last batch committed, so it sends the
-- batch again: a result naming the lease it answers (`lease`, from adapter.claim_calls) is recorded
-- once per call and lease, and a repeat changes nothing, not even the log.
-- p_results: [{"call_id", "lease", "outcome", "reason", "carrier_code", "carrier_message", "carrier_ref",
--              "amount_minor", "balance_minor", "latency_ms", "request", "response"}, ...]
create or replace function adapter.complete_calls(p_results jsonb) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_results jsonb;
    v_repeats integer;
    v_result jsonb;
    v_settled bigint[];
    v_applied text;
    v_summary jsonb := '{}';
begin
    if jsonb_typeof(p_results) is distinct from 'array' then
        perform cp.fail('CP080', 'complete_calls takes a JSON array of results');
    end if;
    -- Lock in call id order so concurrent batches cannot deadlock on each other.
    perform 1 from cp.carrier_call
    where call_id in (select (r->>'call_id')::bigint from jsonb_array_elements(p_results) r)
    order by call_id
    for update;
    -- Left out: an answer for a lease already answered (or a later one), the same answer twice in
    -- this batch, and an answer that says nothing happened (throttled, unreachable, transient,
    -- unknown, pending) from a lease the call has outlived: the call was handed out again since, and
    -- putting it back on the queue or opening a new attempt now could send it twice at once.
    select coalesce(jsonb_agg(x.r order by x.n) filter (where not x.repeat), '[]'),
           count(*) filter (where x.repeat)
    into v_results, v_repeats
    from (
        select t.r, t.n, coalesce(
            t.r->>'lease' is not null and (
                row_number() over (partition by t.r->>'call_id', t.r->>'lease' order by t.n) > 1
                or (t.r->>'lease')::integer <= c.answered_lease_no
                or ((t.r->>'lease')::integer < c.lease_no
                    and not (t.r->>'outcome' = 'succeeded'
                             or (t.r->>'outcome' = 'failed'
                                 and coalesce(t.r->>'reason', 'rejected')
                                     not in ('throttled', 'unreachable', 'transient', 'unknown'))))),
            false) as repeat
        from jsonb_array_elements(p_results) with ordinality as t(r, n)
        left join cp.carrier_call c on c.call_id = (t.r->>'call_id')::bigint
    ) x;
    if v_repeats > 0 then
        v_summary := jsonb_build_object('duplicate', v_repeats);
    end if;
    v_settled := cp.settle_charges(v_results);
    if cardinality(v_settled) > 0 then
        v_summary := v_summary || jsonb_build_object('applied', cardinality(v_settled));
    end if;
    for v_result in
        select r from jsonb_array_elements(v_results) with ordinality as t(r, n)
        where not coalesce((r->>'call_id')::bigint = any (v_settled), false)
        order by (r->>'call_id')::bigint, n
    loop
        v_applied := cp.apply_call_result((v_result->>'call_id')::bigint, v_result);
        v_summary := jsonb_set(v_summary, array[v_applied],
                               to_jsonb(coalesce((v_summary->>v_applied)::int, 0) + 1));
    end loop;
    -- cp.settle_charges notes the lease of what it settles in its own update; the rest here.
    update cp.carrier_call c set answered_lease_no = l.lease
    from (select (r->>'call_id')::bigint as call_id, max((r->>'lease')::integer) as lease
          from jsonb_array_elements(v_results) r
          where r->>'lease' is not null
          group by 1) l
    where c.call_id = l.call_id and coalesce(c.answered_lease_no, 0) < l.lease;
    insert into cp.carrier_log (call_id, procedure_id, carrier_id, operation, outcome, reason, carrier_code,
                                latency_ms, request, response)
    select c.call_id, c.procedure_id, c.carrier_id, c.operation, r->>'outcome', r->>'reason', r->>'carrier_code',
           (r->>'latency_ms')::int, r->'request', r->'response'
    from jsonb_array_elements(v_results) with ordinality as t(r, n)
    join cp.carrier_call c on c.call_id = (r->>'call_id')::bigint
    order by c.call_id, t.n;
    return v_summary;
end
$$;

-- Record a carrier callback (async result, late result, receipt). Idempotent: the same callback
-- twice changes nothing the second time; a callback may arrive before the synchronous answer.
-- p_payload: {"correlator" | "carrier_ref", "outcome", "reason", "carrier_code", "amount_minor", "dedupe_key", ...}
create or replace function adapter.record_callback(p_carrier text, p_payload jsonb) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_carrier_id integer;
    v_call cp.carrier_call;
    v_key text;
    v_applied text;
begin
    select carrier_id into v_carrier_id from cp.carrier where code = p_carrier;
    if v_carrier_id is null then
        perform cp.fail('CP070', format('unknown carrier %L', p_carrier));
    end if;
    v_key := coalesce(p_payload->>'dedupe_key', md5(p_payload::text));
    insert into cp.callback_inbox (carrier_id, dedupe_key, payload) values (v_carrier_id, v_key, p_payload)
    on conflict do nothing;
    if not found then
        return jsonb_build_object('id', v_key, 'status', 'duplicate');
    end if;
    if p_payload->>'correlator' is not null then
        select * into v_call from cp.carrier_call
        where carrier_id = v_carrier_id and correlator = p_payload->>'correlator';
    else
        -- By the carrier's id; a multi-part SMS has one id per part, joined by ','. The lock pairs with
        -- cp.rematch_callbacks, so a receipt racing the call's id either finds it or is found later.
        perform pg_catalog.pg_advisory_xact_lock(v_carrier_id, hashtext(p_payload->>'carrier_ref'));
        select * into v_call from cp.carrier_call
        where carrier_id = v_carrier_id and carrier_ref is not null
          and string_to_array(carrier_ref, ',') @> array[p_payload->>'carrier_ref']
        order by call_id desc limit 1;
    end if;
    if not found then
        -- Kept in the inbox for late matching; the reconciler looks here too.
        return jsonb_build_object('id', v_key, 'status', 'unmatched');
    end if;
    v_applied := cp.apply_call_result(v_call.call_id, p_payload);
    insert into cp.carrier_log (call_id, procedure_id, carrier_id, operation, outcome, reason, carrier_code, request,
                                response)
    values (v_call.call_id, v_call.procedure_id, v_call.carrier_id, v_call.operation, p_payload->>'outcome',
            p_payload->>'reason', p_payload->>'carrier_code', null, p_payload - 'raw');
    return jsonb_build_object('id', v_key, 'status', v_applied, 'call_id', v_call.call_id);
end
$$;

-- Leases that ran out (a daemon died or stalled). Calls safe to repeat go back to the queue with
-- the same correlator; others (charges, refunds) may have reached the carrier, so they become
-- unknown and wait for reconciliation: never a blind retry.
create or replace function adapter.expire_leases(p_limit integer default 1000) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_call cp.carrier_call;
    v_requeued integer := 0;
    v_unknown integer := 0;
begin
    for v_call in
        select c.* from cp.call_queue q join cp.carrier_call c using (call_id)
        where q.lease_until < cp.clock_now()
        order by q.call_id
        limit p_limit
        for update of q, c skip locked
    loop
        if v_call.safe_to_repeat then
            update cp.call_queue set lease_until = null, worker = null, available_at = cp.clock_now()
            where call_id = v_call.call_id;
            update cp.carrier_call set status = 'queued' where call_id = v_call.call_id;
            v_requeued := v_requeued + 1;
        else
            perform cp.apply_call_result(v_call.call_id,
                jsonb_build_object('outcome', 'unknown', 'reason', 'lease_expired'));
            v_unknown := v_unknown + 1;
        end if;
    end loop;
    return jsonb_build_object('requeued', v_requeued, 'unknown', v_unknown);
end
$$;

-- Whether asking the carrier about an unsettled call can give a trustworthy answer now. An
-- accepted call (awaiting its result) can be asked at once; for a call whose outcome is unknown
-- the carrier may still be working on the request, so until twice its timeout has passed in real
-- time, "no such transaction" from a status query would prove nothing.
create or replace function cp.reconcilable_now(p_status cp.call_status, p_sent_at timestamptz, p_spec jsonb)
returns boolean
language sql stable
as $$
    select p_status = 'awaiting_result' or p_sent_at is null
           or p_sent_at < clock_timestamp()
                          - make_interval(secs => 2 * coalesce((p_spec #>> '{timeouts,total_s}')::float8, 30))
$$;

-- Calls whose outcome is unknown (or awaited) and due for a reconciliation attempt, leased to
-- the reconciler by pushing their next attempt out on the back-off (5 min, 1 h, then daily), and
-- only once the call has been quiet for twice the carrier's timeout in real time.
create or replace function adapter.claim_reconciliations(p_carrier text, p_limit integer) returns setof jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    return query
    with picked as (
        select c.call_id from cp.carrier_call c join cp.carrier k using (carrier_id)
        where k.code = p_carrier and c.status in ('unknown', 'awaiting_result')
          and c.next_reconcile_at <= cp.clock_now()
          and cp.reconcilable_now(c.status, c.sent_at, k.spec)
        order by c.next_reconcile_at
        limit p_limit
        for update of c skip locked
    ), bumped as (
        update cp.carrier_call c
        set reconcile_attempts = c.reconcile_attempts + 1,
            next_reconcile_at = cp.clock_now() + case c.reconcile_attempts when 0 then interval '1 hour'
                                                                           else interval '1 day' end
        from picked where c.call_id = picked.call_id
        returning c.*
    )
    select cp.call_document(bumped::cp.carrier_call) || jsonb_build_object(
        'status', bumped.status, 'carrier_ref', bumped.carrier_ref, 'reconcile_attempts', bumped.reconcile_attempts)
    from bumped;
end
$$;

