-- The daemons' side (role carrierpay_adapter): claim carrier calls in batches, complete them in
-- batches, record callbacks, expire leases and find what needs reconciling.

-- Lease up to p_limit ready calls of a carrier to one worker. Returns one call document each.
-- A charge is handed out only inside the charging hours of its subscriber's local time, however it
-- came to be ready (queued late, a transient retry, a throttled or unreachable call held back, a
-- backlog that outlived the window): outside them it stays queued, moved to the window's next
-- opening, so it is not picked again before then. Whether the window is open is worked out once per
-- claim in the carrier's zone; only the calls of subscribers with a zone of their own are judged one
-- by one.
create or replace function adapter.claim_calls(p_carrier text, p_limit integer, p_lease interval, p_worker text)
returns setof jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_carrier_id integer;
    v_timezone text;
    v_now timestamptz := cp.clock_now();
    v_hours text;
    v_open boolean := true;
    v_opening timestamptz;
    v_left integer;
    v_granted integer;
    v_sendable bigint[];
    v_held bigint[];
    v_gate record;
begin
    select carrier_id, timezone into v_carrier_id, v_timezone from cp.named_carrier(p_carrier);
    -- A paused carrier, merchant or product, or a tripped breaker, holds calls (db/procedures/130_breaker.sql).
    select * into v_gate from cp.claim_gate(v_carrier_id);
    if not v_gate.allowed then
        return;
    end if;
    -- The carrier's calls-per-second budget is shared by every adapter process: what is left of this
    -- second bounds the pick (read without a lock), and the budget is taken for what was picked.
    v_left := cp.budget_left(v_carrier_id);
    if v_left = 0 then
        return;
    end if;
    v_hours := nullif(cp.effective_rules(v_carrier_id)->>'charging_hours', '');
    if v_hours is not null then
        v_open := cp.in_window((v_now at time zone v_timezone)::time, v_hours);
        if not v_open then
            v_opening := cp.next_charging_time(v_hours, v_timezone, v_now);
        end if;
    end if;
    select coalesce(array_agg(x.call_id order by x.available_at, x.call_id) filter (where x.may_send), '{}'),
           coalesce(array_agg(x.call_id) filter (where not x.may_send), '{}')
    into v_sendable, v_held
    from (
        select q.call_id, q.available_at,
               not q.charging_hours or v_hours is null
               or case when q.timezone is null then v_open
                       else cp.in_window((v_now at time zone q.timezone)::time, v_hours) end as may_send
        from cp.call_queue q
        where q.carrier_id = v_carrier_id and q.lease_until is null and q.available_at <= v_now
          and (v_gate.probe_call is null or q.call_id = v_gate.probe_call)
          and (not v_gate.holds or not cp.call_held(q.call_id))
        order by q.available_at
        limit least(p_limit, v_left)
        for update skip locked
    ) x;
    -- Outside its subscriber's charging hours a charge waits for the next opening (no budget used).
    update cp.call_queue q
    set available_at = case when q.timezone is null then v_opening
                            else cp.next_charging_time(v_hours, q.timezone, v_now) end
    where q.call_id = any (v_held);
    v_granted := cp.take_budget(v_carrier_id, cardinality(v_sendable));
    if v_granted = 0 then
        return;
    end if;
    v_sendable := v_sendable[1:v_granted];  -- the rest stay queued (locked until this commits)
    return query
    with leased as (
        -- By primary key lookups whatever the statistics say: the queue's are usually from a moment it
        -- was nearly empty, and a join planned for one row turns quadratic for a batch.
        update cp.call_queue q set lease_until = v_now + p_lease, worker = p_worker
        where q.call_id = any (v_sendable)
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
           || jsonb_build_object('lease_until', v_now + p_lease, 'lease', calls.lease_no)
    from calls;  -- procs runs regardless: data-modifying CTEs always execute
end
$$;

-- A logged request or response of a call, or a stand-in when it shows one of p_secrets (the digit
-- runs of a sensitive SMS, such as its PIN). Adapters mask these themselves; this keeps a connector
-- that did not from storing one in cp.carrier_log, and so in the history.
create or replace function cp.log_without_secrets(p_doc jsonb, p_secrets jsonb) returns jsonb
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select case when exists (select 1 from jsonb_array_elements_text(coalesce(p_secrets, '[]')) s
                             where p_doc::text ~ ('(^|[^0-9])' || s || '($|[^0-9])'))
                then jsonb_build_object('redacted', 'held a secret of this SMS')
                else p_doc end
$$;

-- Apply a batch of carrier outcomes in one transaction, and log each interaction. The plain charge
-- outcomes (most of any batch) are settled together by cp.settle_charges; the rest one by one.
-- An adapter that lost its connection cannot tell whether its last batch committed, so it sends the
-- batch again: a result naming the lease it answers (`lease`, from adapter.claim_calls) is recorded
-- once per call and lease, and a repeat changes nothing, not even the log.
-- p_results: [{"call_id", "lease", "outcome", "reason", "carrier_code", "carrier_message", "carrier_ref",
--              "amount_minor", "balance_minor", "reservation", "latency_ms", "request", "response"}, ...]
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
    v_secrets jsonb;
begin
    if jsonb_typeof(p_results) is distinct from 'array' then
        perform cp.fail('CP080', 'complete_calls takes a JSON array of results');
    end if;
    -- Lock in call id order so concurrent batches cannot deadlock on each other. Read the secrets of
    -- the batch's sensitive SMS while at it, before settling replaces their text: the digit runs of
    -- the text that its redacted form does not have.
    select jsonb_object_agg(x.call_id::text, x.secrets) filter (where x.secrets is not null)
    into v_secrets
    from (select c.call_id,
                 case when c.operation = 'send_sms' and c.params->>'sensitive' = 'true'
                           and c.params->>'redacted' is null
                      then to_jsonb(array(
                          select m[1] from regexp_matches(c.params->>'text', '([0-9]{4,})', 'g') m
                          except
                          select m[1] from regexp_matches(coalesce(c.params->>'redacted_text', ''),
                                                          '([0-9]{4,})', 'g') m)) end as secrets
          from cp.carrier_call c
          where c.call_id in (select (r->>'call_id')::bigint from jsonb_array_elements(p_results) r)
          order by c.call_id
          for update) x;
    -- Left out: an answer for a lease already answered (or a later one), the same answer twice in
    -- this batch, and an answer that says nothing happened (pending, or a failure whose reason
    -- cp.failure_reason does not call definite) from a lease the call has outlived: the call was
    -- handed out again since, and putting it back on the queue or opening a new attempt now could
    -- send it twice at once.
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
                                     not in (select reason from cp.failure_reason where not definite))))),
            false) as repeat
        from jsonb_array_elements(p_results) with ordinality as t(r, n)
        left join cp.carrier_call c on c.call_id = (t.r->>'call_id')::bigint
    ) x;
    if v_repeats > 0 then
        v_summary := jsonb_build_object('duplicate', v_repeats);
    end if;
    -- Reservations two-step calls made are kept before their calls settle (cp.settle_reservations).
    perform cp.note_reservations(v_results);
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
           (r->>'latency_ms')::int,
           case when v_secrets ? c.call_id::text then cp.log_without_secrets(r->'request', v_secrets->(c.call_id::text))
                else r->'request' end,
           case when v_secrets ? c.call_id::text then cp.log_without_secrets(r->'response', v_secrets->(c.call_id::text))
                else r->'response' end
    from jsonb_array_elements(v_results) with ordinality as t(r, n)
    join cp.carrier_call c on c.call_id = (r->>'call_id')::bigint
    order by c.call_id, t.n;
    return v_summary;
end
$$;

-- Refuse a callback payload the ledger could not take as it is, before anything is written: the
-- callback server checks the same, so this only fires for a caller that skipped it.
create or replace function cp.check_callback_payload(p_payload jsonb) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_amount numeric;
begin
    if jsonb_typeof(p_payload) is distinct from 'object' then
        perform cp.fail('CP073', 'a callback payload is a JSON object');
    end if;
    if p_payload->>'outcome' is null or p_payload->>'outcome' not in ('succeeded', 'failed', 'unknown', 'pending') then
        perform cp.fail('CP080', format('callback outcome must be succeeded, failed, unknown or pending, not %L',
                                        left(p_payload->>'outcome', 20)));
    end if;
    if p_payload->>'amount_minor' is not null then
        if jsonb_typeof(p_payload->'amount_minor') <> 'number' then
            perform cp.fail('CP073', 'a callback amount_minor is a number');
        end if;
        v_amount := (p_payload->>'amount_minor')::numeric;
        if v_amount <> trunc(v_amount) or v_amount < 0 or v_amount > 9223372036854775807 then
            perform cp.fail('CP073', 'a callback amount_minor is a whole number of minor units, 0 to 2^63-1');
        end if;
    end if;
end
$$;

-- Apply a callback to the sent call it names (locked by the caller). A result in another currency
-- than the payment's describes some other transaction: it is kept as a conflict and changes nothing.
create or replace function cp.apply_callback_result(p_call cp.carrier_call, p_payload jsonb) returns text
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    if p_payload->>'currency' is not null
       and upper(p_payload->>'currency') is distinct from
           (select p.currency::text from cp.procedure p where p.procedure_id = p_call.procedure_id) then
        perform cp.record_call_conflict(p_call, 'currency', p_payload);
        return 'conflict';
    end if;
    return cp.apply_call_result(p_call.call_id, p_payload);
end
$$;

-- Record a carrier callback (async result, late result, receipt). Idempotent: the same callback
-- twice changes nothing the second time; a callback may arrive before the synchronous answer.
-- Only a call handed to the carrier can be settled by one: a call still (or again) in the queue
-- was never sent, or nothing of it reached the carrier, so a result for it is a conflict, and so
-- is one in another currency than the payment's.
-- p_payload: {"correlator" | "carrier_ref", "outcome", "reason", "carrier_code", "amount_minor", "currency",
--             "dedupe_key", ...}
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
    v_carrier_id := (cp.named_carrier(p_carrier)).carrier_id;
    perform cp.check_callback_payload(p_payload);
    v_key := coalesce(p_payload->>'dedupe_key', md5(p_payload::text));
    insert into cp.callback_inbox (carrier_id, dedupe_key, payload) values (v_carrier_id, v_key, p_payload)
    on conflict do nothing;
    if not found then
        return jsonb_build_object('id', v_key, 'status', 'duplicate');
    end if;
    -- Locked now, so the call cannot be claimed or requeued between the check below and the change.
    if p_payload->>'correlator' is not null then
        -- A correlator is 'cp-' and the call's id (carrier_call_correlator_is_id).
        select * into v_call from cp.carrier_call
        where call_id = case when p_payload->>'correlator' ~ '^cp-[0-9]{1,18}$'
                             then substr(p_payload->>'correlator', 4)::bigint end
          and carrier_id = v_carrier_id and correlator = p_payload->>'correlator'
        for update;
    else
        -- By the carrier's id; a multi-part SMS has one id per part, joined by ','. The lock pairs with
        -- cp.rematch_callbacks, so a receipt racing the call's id either finds it or is found later.
        perform pg_catalog.pg_advisory_xact_lock(v_carrier_id, hashtext(p_payload->>'carrier_ref'));
        select * into v_call from cp.carrier_call
        where carrier_id = v_carrier_id and message_ids is not null
          and message_ids @> array[p_payload->>'carrier_ref']
        order by call_id desc limit 1
        for update;
    end if;
    if not found then
        -- Kept in the inbox for late matching; the reconciler looks here too.
        return jsonb_build_object('id', v_key, 'status', 'unmatched');
    end if;
    if v_call.status = 'queued' then
        -- Not kept in the inbox: once the call has been sent, a repeat of this callback may count.
        delete from cp.callback_inbox where carrier_id = v_carrier_id and dedupe_key = v_key;
        perform cp.record_call_conflict(v_call, 'not_sent', p_payload);
        return jsonb_build_object('id', v_key, 'status', 'not_sent', 'call_id', v_call.call_id);
    end if;
    v_applied := cp.apply_callback_result(v_call, p_payload);
    insert into cp.carrier_log (call_id, procedure_id, carrier_id, operation, outcome, reason, carrier_code, request,
                                response)
    values (v_call.call_id, v_call.procedure_id, v_call.carrier_id, v_call.operation, p_payload->>'outcome',
            p_payload->>'reason', p_payload->>'carrier_code', null, p_payload - 'raw');
    return jsonb_build_object('id', v_key, 'status', v_applied, 'call_id', v_call.call_id);
end
$$;

-- The one answer to "may this call be sent again (same correlator)?": only when its carrier
-- deduplicates our correlator, or the operation changes nothing. A money operation the spec says
-- nothing about is never repeated: a repeat could charge or pay twice. p_recorded is what this
-- function answered when the call was queued (cp.carrier_call.safe_to_repeat), so a call is sent
-- again only if its carrier deduplicated it then and still does now.
create or replace function cp.may_send_again(p_spec jsonb, p_operation text, p_recorded boolean default true)
returns boolean
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select coalesce(p_recorded, false)
           and coalesce((p_spec #>> array['operations', p_operation, 'safe_to_repeat'])::boolean,
                        p_operation not in ('charge', 'refund', 'reserve', 'capture'))
$$;

-- The one answer to "how is this unsettled call settled?", read from its carrier's spec; the
-- reconciler only carries it out. A charge is never sent again by reconciliation (a status query or
-- the result file says what happened, else its late callback is awaited): days later the carrier
-- may no longer recognise our correlator. Other money operations are repeated when the carrier
-- deduplicates them, else asked about when the status query covers them (a query that knows only
-- payments would call an applied refund "no such transaction"). Anything else is repeated when
-- safe, else closed as failed/unknown: there is nothing to recover.
-- Returns status_query | result_file | resend | wait | close.
create or replace function cp.settlement_route(p_call cp.carrier_call) returns text
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select case
        when p_call.operation = 'charge' then
            case when o.has_status then 'status_query' when o.has_reports then 'result_file' else 'wait' end
        when p_call.operation in ('refund', 'reserve', 'capture') then
            case when o.has_reports and p_call.pattern = 'report' then 'result_file'
                 when o.may_repeat then 'resend'
                 when o.has_status then 'status_query'
                 when o.has_reports then 'result_file'
                 else 'wait' end
        when o.may_repeat then 'resend'
        else 'close' end
    from (select k.spec->'operations' ? 'status'
                 and case when jsonb_typeof(k.spec #> '{operations,status,covers}') = 'array'
                               and k.spec #> '{operations,status,covers}' <> '[]'::jsonb
                          then k.spec #> '{operations,status,covers}'
                          else '["charge"]'::jsonb end ? p_call.operation as has_status,
                 jsonb_typeof(k.spec->'reports') = 'object' and k.spec->'reports' <> '{}'::jsonb as has_reports,
                 cp.may_send_again(k.spec, p_call.operation, p_call.safe_to_repeat) as may_repeat
          from cp.carrier k where k.carrier_id = p_call.carrier_id) o
$$;

-- Leases that ran out (a daemon died or stalled). A call that may be sent again
-- (cp.may_send_again: its carrier deduplicates our correlator, or it changes nothing) goes back to
-- the queue with the same correlator; a charge among them is still claimed only inside charging
-- hours. Any other call may have reached the carrier, so it becomes unknown and waits for
-- reconciliation: never a blind retry.
create or replace function adapter.expire_leases(p_limit integer default 1000) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_expired record;
    v_requeued integer := 0;
    v_unknown integer := 0;
begin
    for v_expired in
        select c.call_id, cp.may_send_again(k.spec, c.operation, c.safe_to_repeat) as may_repeat
        from cp.call_queue q join cp.carrier_call c using (call_id) join cp.carrier k on k.carrier_id = c.carrier_id
        where q.lease_until < cp.clock_now()
        order by q.call_id
        limit p_limit
        for update of q, c skip locked
    loop
        if v_expired.may_repeat then
            update cp.call_queue set lease_until = null, worker = null, available_at = cp.clock_now()
            where call_id = v_expired.call_id;
            update cp.carrier_call set status = 'queued' where call_id = v_expired.call_id;
            v_requeued := v_requeued + 1;
        else
            perform cp.apply_call_result(v_expired.call_id,
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
-- only once the call has been quiet for twice the carrier's timeout in real time. Each document
-- carries its route (cp.settlement_route), so the reconciler decides nothing itself.
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
        'status', bumped.status, 'carrier_ref', bumped.carrier_ref, 'reconcile_attempts', bumped.reconcile_attempts,
        'route', cp.settlement_route(bumped::cp.carrier_call))
    from bumped;
end
$$;

-- What is left of a carrier's budget for this second, over all its slots (cp.take_budget); read
-- without locks, so an adapter with nothing to take leaves the queue alone.
create or replace function cp.budget_left(p_carrier_id integer) returns integer
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select greatest(0, c.tps - coalesce((select sum(b.used) from cp.carrier_budget b
                                         where b.carrier_id = c.carrier_id
                                           and b.window_start >= date_trunc('second', clock_timestamp())), 0))::integer
    from cp.carrier c where c.carrier_id = p_carrier_id
$$;

-- Take up to p_wanted calls from a carrier's per-second throughput budget (real time, not the
-- business clock: carriers count real requests). Returns how many were granted. The budget is split
-- in slots (one per 20 calls a second, at most 8), each with its share of the second: a claim takes
-- from the slots no other transaction holds and stops once it has what it wants, so
-- concurrent adapters draw from different rows instead of queueing on one until each commits.
create or replace function cp.take_budget(p_carrier_id integer, p_wanted integer) returns integer
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_now timestamptz := date_trunc('second', clock_timestamp());
    v_tps integer;
    v_slots integer;
    v_slot record;
    v_i integer;
    v_share integer;
    v_used integer;
    v_take integer;
    v_granted integer := 0;
begin
    select tps into v_tps from cp.carrier where carrier_id = p_carrier_id;
    v_slots := least(8, greatest(1, v_tps / 20));
    -- Slots are created once (an insert that meets a slot another claim has just updated would wait
    -- for that claim to commit).
    if (select count(*) from cp.carrier_budget where carrier_id = p_carrier_id) < v_slots then
        insert into cp.carrier_budget (carrier_id, slot, window_start, used)
        select p_carrier_id, s, v_now, 0 from generate_series(0, v_slots - 1) s
        on conflict (carrier_id, slot) do nothing;
    end if;
    -- One slot at a time (a FOR loop over the query would fetch, and so lock, several at once), from
    -- one that depends on the backend, so two adapters start on different rows.
    for v_i in 0 .. v_slots - 1 loop
        select b.slot, b.window_start, b.used into v_slot from cp.carrier_budget b
        where b.carrier_id = p_carrier_id and b.slot = (pg_catalog.pg_backend_pid() + v_i) % v_slots
        for update skip locked;
        continue when not found;
        v_share := v_tps / v_slots + case when v_slot.slot < v_tps % v_slots then 1 else 0 end;
        v_used := case when v_slot.window_start < v_now then 0 else v_slot.used end;
        v_take := greatest(0, least(p_wanted - v_granted, v_share - v_used));
        if v_take > 0 then
            update cp.carrier_budget set window_start = v_now, used = v_used + v_take
            where carrier_id = p_carrier_id and slot = v_slot.slot;
        end if;
        v_granted := v_granted + v_take;
        exit when v_granted >= p_wanted;
    end loop;
    return v_granted;
end
$$;
