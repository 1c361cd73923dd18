-- Carrier answers: applying a call's outcome to the call, its procedure, the ledger, the entitlement,
-- the subscription and the merchant notification in one transaction. One call at a time goes through
-- cp.apply_call_result (a dispatcher over one function per outcome); a batch of plain charge outcomes
-- through cp.settle_charges; both record a definite answer by the same set-based functions.

-- A call that failed before reaching the carrier (transient) gets a new attempt, at most three in
-- all, 30 s × attempt later: a new call, so a new correlator. Returns whether one was queued.
create or replace function cp.retry_transient(p_call cp.carrier_call, p_proc cp.procedure, p_reason text)
returns boolean
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    if p_reason is distinct from 'transient' or p_call.attempt >= 3 or p_proc.status <> 'in_flight' then
        return false;
    end if;
    perform cp.queue_call(p_proc.procedure_id, p_call.operation, p_call.params,
                          cp.clock_now() + make_interval(secs => 30 * p_call.attempt), p_call.attempt + 1);
    return true;
end
$$;

-- When to try again a call that could not reach its carrier (nothing was sent), held since p_since:
-- after as long again as it has been held, at least 5 seconds and at most 2 minutes apart (so 5 s,
-- 10 s, 20 s, ... then every 2 minutes); null once it has been held for an hour: it then fails.
create or replace function cp.unreachable_retry_at(p_since timestamptz) returns timestamptz
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select case when cp.clock_now() - p_since < interval '1 hour'
                then cp.clock_now() + least(greatest(cp.clock_now() - p_since, interval '5 seconds'),
                                            interval '2 minutes') end
$$;

-- Record the definite answers to calls (done or failed, off the queue, nothing left to reconcile) for
-- a batch at once, one answer being the batch of one, and put their procedures in flight if nothing
-- had yet. p_leases, when given, notes the lease each answer names.
create or replace function cp.close_calls(p_call_ids bigint[], p_procedure_ids bigint[], p_outcomes text[],
                                          p_reasons text[], p_codes text[], p_refs text[], p_leases integer[])
returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    delete from cp.call_queue where call_id = any (p_call_ids);
    update cp.carrier_call c
    set status = case when f.outcome = 'succeeded' then 'done'::cp.call_status else 'failed' end,
        outcome = f.outcome, reason = f.reason, carrier_code = f.carrier_code,
        carrier_ref = coalesce(f.carrier_ref, c.carrier_ref), next_reconcile_at = null,
        answered_lease_no = coalesce(f.lease, c.answered_lease_no)
    from unnest(p_call_ids, p_outcomes, p_reasons, p_codes, p_refs, p_leases)
         as f(call_id, outcome, reason, carrier_code, carrier_ref, lease)
    where c.call_id = f.call_id;
    update cp.procedure set status = 'in_flight' where procedure_id = any (p_procedure_ids) and status = 'pending';
end
$$;

-- Collect charges whose calls succeeded, for a batch at once (one charge being the batch of one):
-- each procedure 'succeeded' with the amount its carrier charged, then the journals, each
-- subscription's next period, the entitlements, the merchant notifications and, where the regulation
-- requires them, receipts.
create or replace function cp.collect_charges(p_procedure_ids bigint[], p_amounts bigint[]) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_procs cp.procedure[];
    v_proc cp.procedure;
    v_period_procs bigint[] := '{}';
    v_period_ends timestamptz[] := '{}';
begin
    with collected as (
        update cp.procedure p
        set collected_minor = f.amount_minor, status = 'succeeded', reason = null
        from unnest(p_procedure_ids, p_amounts) as f(procedure_id, amount_minor)
        where p.procedure_id = f.procedure_id
        returning p
    ) select array_agg(p order by (p).procedure_id) into v_procs from collected;
    if v_procs is null then
        return;
    end if;
    perform cp.post_charge_journals(v_procs);
    perform cp.record_hour_stats(v_procs, true);
    select coalesce(array_agg(e.procedure_id), '{}'), coalesce(array_agg(e.valid_until), '{}')
    into v_period_procs, v_period_ends
    from cp.subscription_charges_succeeded(array(select p from unnest(v_procs) p
                                                  where p.subscription_id is not null)) e;
    -- A part of an accumulating period entitles to nothing yet (a null valid_until would mean forever):
    -- the part that completes the period grants it.
    insert into cp.entitlement (procedure_id, merchant_id, subscriber_id, product_id, variant, amount_minor,
                                granted_at, valid_until)
    select p.procedure_id, p.merchant_id, p.subscriber_id, p.product_id, coalesce(p.variant, 'default'),
           p.collected_minor, cp.clock_now(), e.valid_until
    from unnest(v_procs) p
    left join unnest(v_period_procs, v_period_ends) as e(procedure_id, valid_until) using (procedure_id)
    where p.subscription_id is null or e.valid_until is not null
    order by p.procedure_id;
    perform cp.notify_merchant_payments(v_procs, 'payment.succeeded');
    for v_proc in
        with receipt_carrier as materialized (  -- the rules once per carrier, not once per charge
            select c.carrier_id from (select distinct carrier_id from unnest(v_procs)) c
            where coalesce((cp.effective_rules(c.carrier_id)->>'receipt_after_charge')::boolean, false)
        )
        select p.* from unnest(v_procs) p join receipt_carrier using (carrier_id)
        order by p.procedure_id
    loop
        perform cp.queue_charge_receipt(v_proc);
    end loop;
end
$$;

-- Fail for good charges whose calls definitely failed, for a batch at once (one charge being the
-- batch of one): each procedure 'failed' with its reason and counted in the hour statistics, then the
-- merchant notifications, and each subscription's retry policy.
create or replace function cp.fail_charges(p_procedure_ids bigint[], p_reasons text[]) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_procs cp.procedure[];
begin
    with failed as (
        update cp.procedure p
        set status = 'failed', reason = f.reason
        from unnest(p_procedure_ids, p_reasons) as f(procedure_id, reason)
        where p.procedure_id = f.procedure_id
        returning p
    ) select array_agg(p order by (p).procedure_id) into v_procs from failed;
    if v_procs is null then
        return;
    end if;
    perform cp.record_hour_stats(v_procs, false);
    perform cp.notify_merchant_payments(v_procs, 'payment.failed');
    perform cp.subscription_charges_failed(array(select p from unnest(v_procs) p where p.subscription_id is not null));
end
$$;

-- Settle together the charge outcomes of a batch that need no judgement: a leased charge call, alone
-- in the batch for its procedure, answered 'succeeded' (for the amount asked) or 'failed' for a
-- definite reason (not throttled, unreachable or transient), its procedure pending or in flight. They
-- go through the same cp.close_calls, cp.collect_charges and cp.fail_charges as cp.settle_call takes
-- one call at a time, a statement per table for the whole batch (noting the lease each result
-- answers). p_results as adapter.complete_calls takes them, whose caller holds the calls' locks and
-- has left out repeats; returns the call ids settled here (the caller applies the others one by one).
create or replace function cp.settle_charges(p_results jsonb) returns bigint[]
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_calls bigint[];
    v_procs bigint[];
    v_outcomes text[];
    v_reasons text[];
    v_codes text[];
    v_refs text[];
    v_leases integer[];
    v_collected bigint[];
    v_amounts bigint[];
    v_failed bigint[];
    v_failures text[];
begin
    -- Lock the procedures of the batch's charge calls in id order, then judge them as locked.
    perform 1 from cp.procedure
    where procedure_id in (select c.procedure_id from jsonb_array_elements(p_results) r
                           join cp.carrier_call c on c.call_id = (r->>'call_id')::bigint
                           where c.operation = 'charge')
    order by procedure_id
    for update;
    select array_agg(call_id order by call_id), array_agg(procedure_id order by call_id),
           array_agg(outcome order by call_id), array_agg(reason order by call_id),
           array_agg(carrier_code order by call_id), array_agg(carrier_ref order by call_id),
           array_agg(lease order by call_id),
           array_agg(procedure_id order by call_id) filter (where outcome = 'succeeded'),
           array_agg(amount_minor order by call_id) filter (where outcome = 'succeeded'),
           array_agg(procedure_id order by call_id) filter (where outcome = 'failed'),
           array_agg(reason order by call_id) filter (where outcome = 'failed')
    into v_calls, v_procs, v_outcomes, v_reasons, v_codes, v_refs, v_leases, v_collected, v_amounts, v_failed,
         v_failures
    from (
        select r.call_id, c.procedure_id, r.outcome, r.reason, r.carrier_code, r.carrier_ref, r.lease,
               coalesce(r.amount_minor, (c.params->>'amount_minor')::bigint) as amount_minor,
               r.per_call, count(*) over (partition by c.procedure_id) as per_procedure,
               c.status = 'leased' and c.operation = 'charge' and p.status in ('pending', 'in_flight')
               and ((r.outcome = 'succeeded'
                     and coalesce(r.amount_minor = (c.params->>'amount_minor')::bigint, true))
                    or (r.outcome = 'failed'
                        and r.reason not in (select reason from cp.failure_reason where not definite)))
                   as plain
        from (select (e->>'call_id')::bigint as call_id, e->>'outcome' as outcome, e->>'reason' as reason,
                     e->>'carrier_code' as carrier_code, e->>'carrier_ref' as carrier_ref,
                     (e->>'amount_minor')::bigint as amount_minor, (e->>'lease')::integer as lease,
                     count(*) over (partition by e->>'call_id') as per_call
              from jsonb_array_elements(p_results) e) r
        join cp.carrier_call c using (call_id)
        join cp.procedure p using (procedure_id)
    ) f
    where plain and per_call = 1 and per_procedure = 1;
    if v_calls is null then
        return '{}';
    end if;
    perform cp.close_calls(v_calls, v_procs, v_outcomes, v_reasons, v_codes, v_refs, v_leases);
    if v_collected is not null then
        perform cp.collect_charges(v_collected, v_amounts);
    end if;
    if v_failed is not null then
        perform cp.fail_charges(v_failed, v_failures);
    end if;
    return v_calls;
end
$$;

-- A refund call succeeded: compensating journal, parent's refunded amount, revoke when full.
create or replace function cp.refund_succeeded(p_refund cp.procedure) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_parent cp.procedure;
    v_refund cp.procedure;
begin
    perform cp.post_refund_journal(p_refund.procedure_id, p_refund.amount_minor);
    update cp.procedure set status = 'succeeded', collected_minor = amount_minor
    where procedure_id = p_refund.procedure_id returning * into v_refund;
    update cp.procedure
    set refunded_minor = refunded_minor + p_refund.amount_minor,
        status = case when refunded_minor + p_refund.amount_minor >= collected_minor
                      then 'refunded'::cp.procedure_status else 'partially_refunded'::cp.procedure_status end
    where procedure_id = p_refund.parent_id
    returning * into v_parent;
    if v_parent.status = 'refunded' then
        update cp.entitlement set revoked_at = cp.clock_now() where procedure_id = v_parent.procedure_id;
    end if;
    perform cp.notify_merchant(v_refund.merchant_id, 'refund.succeeded', cp.procedure_document(v_refund),
                               v_refund.procedure_id);
end
$$;

-- Keep a carrier answer that contradicts what we hold, for a person to look into (report.call_conflicts
-- and an outcome_conflict event): the answer itself changes nothing, so this is the only trace of it.
create or replace function cp.record_call_conflict(p_call cp.carrier_call, p_kind text, p_reported jsonb)
returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_reported jsonb := coalesce(p_reported, '{}') - 'request' - 'response' - 'raw';
begin
    insert into cp.call_conflict (call_id, procedure_id, carrier_id, kind, call_status, reported, recorded_at)
    values (p_call.call_id, p_call.procedure_id, p_call.carrier_id, p_kind, p_call.status, v_reported,
            cp.clock_now());
    perform cp.emit_event('carrier_call', p_call.call_id, 'outcome_conflict',
                          jsonb_build_object('kind', p_kind, 'settled', p_call.status, 'reported', v_reported,
                                             'procedure_id', p_call.procedure_id));
end
$$;

-- An answer to a call already settled (a duplicate callback, or the callback beat the synchronous
-- answer): the first answer stands; one that contradicts it is kept for a person and moves no money.
-- Returns 'duplicate' or 'conflict'.
create or replace function cp.judge_repeated_result(p_call cp.carrier_call, p_result jsonb) returns text
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    if p_result->>'outcome' in ('unknown', 'pending') then
        return 'duplicate';
    end if;
    if (p_call.status = 'done') <> (p_result->>'outcome' = 'succeeded') then
        perform cp.record_call_conflict(p_call, 'outcome', p_result);
        return 'conflict';
    end if;
    if p_call.status = 'done' and p_call.operation = 'charge' and p_result->>'amount_minor' is not null
       and (p_result->>'amount_minor')::numeric
           is distinct from (select p.collected_minor from cp.procedure p where p.procedure_id = p_call.procedure_id)
    then
        perform cp.record_call_conflict(p_call, 'amount', p_result);
        return 'conflict';
    end if;
    return 'duplicate';
end
$$;

-- A leased call that failed before anything was charged goes back to the queue, the same call (same
-- correlator): throttled, after the carrier's retry-after (5 s when it gave none); unreachable (nothing
-- left our machine), on a growing back-off without using up an attempt, so a carrier down for minutes
-- costs no payment. Returns whether it was held; an unreachable call held for an hour is not, and
-- fails like any failure.
create or replace function cp.hold_call(p_call cp.carrier_call, p_result jsonb) returns boolean
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_reason text := p_result->>'reason';
    v_since timestamptz := coalesce(p_call.unreachable_since, cp.clock_now());
    v_retry_at timestamptz;
begin
    if p_result->>'outcome' is distinct from 'failed' or p_call.status <> 'leased'
       or v_reason is null or v_reason not in ('throttled', 'unreachable') then
        return false;
    end if;
    v_retry_at := case when v_reason = 'throttled'
                       then cp.clock_now() + make_interval(secs => coalesce((p_result->>'retry_after_s')::int, 5))
                       else cp.unreachable_retry_at(v_since) end;
    if v_retry_at is null then
        return false;
    end if;
    update cp.call_queue set lease_until = null, worker = null, available_at = v_retry_at
    where call_id = p_call.call_id;
    update cp.carrier_call
    set status = 'queued', carrier_code = p_result->>'carrier_code',
        unreachable_since = case when v_reason = 'unreachable' then v_since else unreachable_since end
    where call_id = p_call.call_id;
    return true;
end
$$;

-- The carrier accepted a leased call and will give its result later: off the queue, awaiting the
-- result, and asked about in 5 minutes if none comes.
create or replace function cp.await_call_result(p_call cp.carrier_call, p_result jsonb) returns text
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    if p_call.status = 'leased' then
        delete from cp.call_queue where call_id = p_call.call_id;
        update cp.carrier_call
        set status = 'awaiting_result', carrier_ref = coalesce(p_result->>'carrier_ref', carrier_ref),
            next_reconcile_at = cp.clock_now() + interval '5 minutes'
        where call_id = p_call.call_id;
    end if;
    return 'applied';
end
$$;

-- Nobody can tell whether the carrier carried out a call (a timeout, a lease run out): the call, and
-- its procedure if in flight, are unknown until reconciliation (asked in 5 minutes) settles them.
create or replace function cp.mark_call_unknown(p_call cp.carrier_call, p_result jsonb) returns text
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    if p_call.status = 'unknown' then
        return 'duplicate';
    end if;
    delete from cp.call_queue where call_id = p_call.call_id;
    update cp.carrier_call
    set status = 'unknown', outcome = 'unknown', reason = coalesce(p_result->>'reason', 'unknown'),
        carrier_code = p_result->>'carrier_code', carrier_ref = coalesce(p_result->>'carrier_ref', carrier_ref),
        next_reconcile_at = cp.clock_now() + interval '5 minutes'
    where call_id = p_call.call_id;
    update cp.procedure set status = 'unknown'
    where procedure_id = p_call.procedure_id and status = 'in_flight';
    return 'applied';
end
$$;

-- A definite answer to a call (succeeded, or failed and not held): the call closed (cp.close_calls) and
-- its procedure settled as its operation means. A charge is collected or failed by the same
-- cp.collect_charges and cp.fail_charges a batch goes through (cp.settle_charges). A transient failure
-- of a charge or an SMS (a PIN someone waits for, a receipt the regulation requires) gets a new
-- attempt, a new call with the text as it was sent, rather than failing the procedure.
create or replace function cp.settle_call(p_call cp.carrier_call, p_result jsonb) returns text
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_outcome text := p_result->>'outcome';
    v_reason text := p_result->>'reason';
    v_asked bigint;
    v_amount bigint;
    v_proc cp.procedure;
begin
    perform cp.close_calls(array[p_call.call_id], array[p_call.procedure_id], array[v_outcome], array[v_reason],
                           array[p_result->>'carrier_code'], array[p_result->>'carrier_ref'], null);
    if p_call.operation = 'release' then  -- a reservation's release: its charge has been settled already
        perform cp.release_answered(c) from cp.carrier_call c where c.call_id = p_call.call_id;
        return 'applied';
    end if;
    select * into v_proc from cp.procedure where procedure_id = p_call.procedure_id for update;
    -- An unknown procedure is settled only by a result of its own operation.
    if v_proc.status = 'unknown' and p_call.operation <> (case v_proc.kind when 'balance_check' then 'balance'
                                                                           when 'sms' then 'send_sms'
                                                                           else v_proc.kind::text end) then
        return 'applied';
    end if;
    if p_call.operation = 'charge' then
        v_asked := (p_call.params->>'amount_minor')::bigint;
        v_amount := coalesce((p_result->>'amount_minor')::bigint, v_asked);
        if v_outcome = 'succeeded' then
            if v_amount <> v_asked then
                perform cp.emit_event('carrier_call', p_call.call_id, 'amount_mismatch',
                                      jsonb_build_object('asked', p_call.params->'amount_minor', 'charged', v_amount,
                                                         'procedure_id', p_call.procedure_id));
            end if;
            perform cp.collect_charges(array[v_proc.procedure_id], array[v_amount]);
        elsif cp.retry_transient(p_call, v_proc, v_reason) then
            perform cp.record_hour_stats(array[v_proc], false);  -- an attempt that failed all the same
        else
            perform cp.fail_charges(array[v_proc.procedure_id], array[coalesce(v_reason, 'rejected')]);
        end if;
    elsif p_call.operation = 'refund' then
        if v_outcome = 'succeeded' then
            perform cp.refund_succeeded(v_proc);
        else
            update cp.procedure set status = 'failed', reason = coalesce(v_reason, 'rejected')
            where procedure_id = v_proc.procedure_id;
        end if;
    elsif p_call.operation = 'balance' then
        update cp.procedure
        set status = case when v_outcome = 'succeeded' then 'succeeded'::cp.procedure_status else 'failed' end,
            reason = v_reason,
            result = jsonb_strip_nulls(jsonb_build_object(
                'balance_minor', (p_result->>'balance_minor')::bigint,
                'sufficient', case when p_result ? 'balance_minor'
                                   then (p_result->>'balance_minor')::bigint >= v_proc.amount_minor end))
        where procedure_id = v_proc.procedure_id;
        if v_proc.subscription_id is not null then  -- a renewal's query (cp.start_balance_checks)
            perform cp.renewal_balance_answered(v_proc, case when v_outcome = 'succeeded'
                                                             then (p_result->>'balance_minor')::bigint end);
        end if;
    elsif v_outcome = 'failed' and cp.retry_transient(p_call, v_proc, v_reason) then
        null;
    else
        update cp.procedure
        set status = case when v_outcome = 'succeeded' then 'succeeded'::cp.procedure_status else 'failed' end,
            reason = v_reason
        where procedure_id = v_proc.procedure_id;
    end if;
    return 'applied';
end
$$;

-- Apply one carrier outcome to its call and procedure: the call locked and checked here, then handed
-- to the function for what the outcome means (an answer to a call already settled, nothing sent,
-- accepted, unknown, definite). Returns what happened, for the caller's log: 'applied', 'duplicate'
-- (the call was already settled the same way) or 'conflict'.
create or replace function cp.apply_call_result(p_call_id bigint, p_result jsonb) returns text
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_call cp.carrier_call;
    v_outcome text := p_result->>'outcome';
begin
    select * into v_call from cp.carrier_call where call_id = p_call_id for update;
    if not found then
        perform cp.fail('CP072', format('unknown carrier call %s', p_call_id));
    end if;
    if v_outcome is null or v_outcome not in ('succeeded', 'failed', 'unknown', 'pending') then
        perform cp.fail('CP080', format('call %s: outcome must be succeeded, failed, unknown or pending, not %L',
                                        p_call_id, left(v_outcome, 64)));
    end if;
    if v_call.status in ('done', 'failed') then
        return cp.judge_repeated_result(v_call, p_result);
    end if;
    if v_call.status = 'queued' then
        -- Its lease ran out and it was requeued. An answer that nothing was sent leaves it there (the
        -- same answer recorded twice must not take it off the queue); a late answer saying what
        -- happened is taken.
        if v_outcome = 'failed' and p_result->>'reason' in (select reason from cp.failure_reason where nothing_sent) then
            return 'duplicate';
        end if;
        delete from cp.call_queue where call_id = v_call.call_id;
        update cp.carrier_call set status = 'leased' where call_id = v_call.call_id returning * into v_call;
    end if;
    if v_call.operation = 'lookup' then  -- a number lookup, maybe holding a charge (db/procedures/070_routing.sql)
        if p_result->>'reason' = 'throttled' and cp.hold_call(v_call, p_result) then
            return 'applied';
        end if;
        return cp.lookup_answered(v_call, p_result);
    end if;
    if v_outcome = 'pending' then
        return cp.await_call_result(v_call, p_result);
    elsif v_outcome = 'unknown' then
        return cp.mark_call_unknown(v_call, p_result);
    elsif v_outcome = 'failed' and cp.hold_call(v_call, p_result) then
        return 'applied';
    end if;
    return cp.settle_call(v_call, p_result);
end
$$;
