-- Reaction: a circuit breaker per carrier, and operator pauses of a carrier, a merchant or a product.
--
-- A breaker trips (state `open`) when, among a carrier's calls of the last `window_s` seconds, at
-- least `min_calls` settled or failed to reach it and `error_pct` percent of them were errors: an
-- unknown outcome (a timeout, a lost answer), a transient failure, or the carrier unreachable. While
-- it is open the carrier's calls stay queued; every `probe_interval_s` one call (the next one ready)
-- is let through as a probe, and after `reset_after` healthy probes in a row the breaker closes by
-- itself. sched.run_breakers (the scheduler's tick) does the judging; adapter.claim_calls asks
-- cp.claim_gate once per claim, so a closed breaker with no pause costs one primary-key lookup.

-- Why a claim may not send what is ready: the carrier paused or its breaker open (allowed false,
-- unless a probe call is named, then only that call may go), and whether any merchant or product is
-- paused at all (so the per-call check costs nothing when none is).
create or replace function cp.claim_gate(p_carrier_id integer)
returns table (allowed boolean, probe_call bigint, holds boolean)
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select not exists (select 1 from cp.claim_pause p where p.scope = 'carrier' and p.target_id = p_carrier_id)
           and (b.state is distinct from 'open' or b.probe_call_id is not null),
           case when b.state = 'open' then b.probe_call_id end,
           exists (select 1 from cp.claim_pause p where p.scope in ('merchant', 'product'))
    from (select 1) one
    left join cp.carrier_breaker b on b.carrier_id = p_carrier_id
$$;

-- Whether a queued call belongs to a paused merchant or product (asked only while some pause exists).
create or replace function cp.call_held(p_call_id bigint) returns boolean
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select exists (select 1 from cp.carrier_call c
                   join cp.procedure p on p.procedure_id = c.procedure_id
                   join cp.claim_pause h on (h.scope = 'merchant' and h.target_id = p.merchant_id)
                                         or (h.scope = 'product' and h.target_id = p.product_id)
                   where c.call_id = p_call_id)
$$;

-- A breaker's state change: the event in the outbox (so the history has it) and the row updated.
create or replace function cp.record_breaker_change(p_carrier_id integer, p_state text, p_reason text) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    update cp.carrier_breaker
    set state = p_state, changed_at = cp.clock_now(), reason = p_reason,
        trips = trips + case when p_state = 'open' then 1 else 0 end,
        probe_call_id = null, probe_lease_no = null, healthy_probes = 0,
        next_probe_at = case when p_state = 'open' then cp.clock_now() + make_interval(secs => probe_interval_s) end
    where carrier_id = p_carrier_id;
    perform cp.emit_event('carrier', p_carrier_id, case p_state when 'open' then 'breaker_tripped'
                                                                else 'breaker_reset' end,
                          jsonb_build_object('reason', p_reason));
end
$$;

-- Judge every carrier's breaker: trip closed ones whose recent calls are mostly errors, follow the
-- open ones' probes, close those whose probes came back healthy. Returns one row per change (the
-- scheduler logs each). Reads only the newest p_scan calls (a primary-key range), never the table.
create or replace function sched.run_breakers(p_scan integer default 20000)
returns table (carrier text, state text, reason text)
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_now timestamptz := cp.clock_now();
    v_row record;
    v_probe cp.carrier_call;
    v_error boolean;
begin
    -- One writer at a time: several schedulers may tick together.
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('carrierpay.run_breakers'));
    insert into cp.carrier_breaker (carrier_id) select k.carrier_id from cp.carrier k on conflict do nothing;

    -- Closed breakers: the error share of the calls created within each carrier's window.
    for v_row in
        with recent as (
            select c.carrier_id, c.status, c.reason, c.unreachable_since, c.created_at
            from cp.carrier_call c
            where c.call_id > (select coalesce(max(m.call_id), 0) from cp.carrier_call m) - p_scan
        ), judged as (
            select b.carrier_id, b.error_pct, b.min_calls,
                   count(*) filter (where r.status = 'unknown' or r.reason in ('transient', 'unreachable', 'unknown')
                                    or (r.status = 'queued' and r.unreachable_since is not null)) as errors,
                   count(*) filter (where r.status in ('done', 'failed', 'awaiting_result', 'unknown')
                                    or (r.status = 'queued' and r.unreachable_since is not null)) as judged
            from cp.carrier_breaker b
            join recent r on r.carrier_id = b.carrier_id and r.created_at >= v_now - make_interval(secs => b.window_s)
            where b.state = 'closed'
            group by b.carrier_id, b.error_pct, b.min_calls
        )
        select j.carrier_id, k.code, j.errors, j.judged, j.error_pct
        from judged j join cp.carrier k using (carrier_id)
        where j.judged >= j.min_calls and j.errors * 100 >= j.error_pct * j.judged
    loop
        perform cp.record_breaker_change(v_row.carrier_id, 'open',
            format('%s of %s recent calls were errors (threshold %s%%)', v_row.errors, v_row.judged, v_row.error_pct));
        carrier := v_row.code; state := 'open';
        reason := format('%s of %s recent calls were errors', v_row.errors, v_row.judged);
        return next;
    end loop;

    -- Open breakers: judge the probe in flight, or name the next one when it is time.
    for v_row in
        select b.*, k.code from cp.carrier_breaker b join cp.carrier k using (carrier_id) where b.state = 'open'
    loop
        if v_row.probe_call_id is not null then
            select * into v_probe from cp.carrier_call c where c.call_id = v_row.probe_call_id;
            if v_probe.call_id is null or (v_probe.status = 'queued' and v_probe.lease_no = v_row.probe_lease_no) then
                -- Not claimed yet: an adapter is on its way; one that never comes (the call held back
                -- by charging hours or a pause) gives way to another probe after an interval.
                if v_row.next_probe_at + make_interval(secs => v_row.probe_interval_s) <= v_now then
                    update cp.carrier_breaker b set probe_call_id = null, probe_lease_no = null
                    where b.carrier_id = v_row.carrier_id;
                end if;
                continue;
            end if;
            if v_probe.status = 'leased' then
                continue;  -- with the carrier now
            end if;
            v_error := v_probe.status in ('unknown', 'queued')
                       or coalesce(v_probe.reason in ('transient', 'unreachable', 'unknown'), false);
            if not v_error and v_row.healthy_probes + 1 >= v_row.reset_after then
                perform cp.record_breaker_change(v_row.carrier_id, 'closed',
                    format('%s healthy probe(s) in a row', v_row.healthy_probes + 1));
                carrier := v_row.code; state := 'closed';
                reason := format('%s healthy probe(s) in a row', v_row.healthy_probes + 1);
                return next;
                continue;
            end if;
            update cp.carrier_breaker b
            set probe_call_id = null, probe_lease_no = null,
                healthy_probes = case when v_error then 0 else b.healthy_probes + 1 end,
                next_probe_at = v_now + make_interval(secs => b.probe_interval_s)
            where b.carrier_id = v_row.carrier_id;
        elsif v_row.next_probe_at <= v_now then
            update cp.carrier_breaker b
            set (probe_call_id, probe_lease_no) = (
                    select q.call_id, c.lease_no
                    from cp.call_queue q join cp.carrier_call c using (call_id)
                    where q.carrier_id = v_row.carrier_id and q.lease_until is null and q.available_at <= v_now
                    order by q.available_at limit 1),
                next_probe_at = v_now
            where b.carrier_id = v_row.carrier_id;
        end if;
    end loop;
end
$$;

-- Set a carrier's breaker thresholds (any of error_pct, min_calls, window_s, probe_interval_s,
-- reset_after); returns them all.
create or replace function admin.set_breaker(p_carrier text, p_settings jsonb) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_carrier_id integer;
    v_key text;
    v_result jsonb;
begin
    v_carrier_id := (cp.named_carrier(p_carrier)).carrier_id;
    if jsonb_typeof(p_settings) is distinct from 'object' then
        perform cp.fail('CP131', 'breaker settings must be a JSON object');
    end if;
    for v_key in select jsonb_object_keys(p_settings) loop
        if v_key not in ('error_pct', 'min_calls', 'window_s', 'probe_interval_s', 'reset_after')
           or jsonb_typeof(p_settings->v_key) <> 'number' or (p_settings->>v_key) !~ '^[0-9]{1,9}$' then
            perform cp.fail('CP131', format('bad breaker setting %L', left(v_key, 32)));
        end if;
    end loop;
    insert into cp.carrier_breaker (carrier_id) values (v_carrier_id) on conflict do nothing;
    begin
        update cp.carrier_breaker b
        set error_pct = coalesce((p_settings->>'error_pct')::integer, b.error_pct),
            min_calls = coalesce((p_settings->>'min_calls')::integer, b.min_calls),
            window_s = coalesce((p_settings->>'window_s')::integer, b.window_s),
            probe_interval_s = coalesce((p_settings->>'probe_interval_s')::integer, b.probe_interval_s),
            reset_after = coalesce((p_settings->>'reset_after')::integer, b.reset_after)
        where b.carrier_id = v_carrier_id
        returning jsonb_build_object('error_pct', b.error_pct, 'min_calls', b.min_calls, 'window_s', b.window_s,
                                     'probe_interval_s', b.probe_interval_s, 'reset_after', b.reset_after)
        into v_result;
    exception when check_violation then
        perform cp.fail('CP131', 'breaker setting out of range (error_pct 1-100, min_calls >= 1, window_s 5-86400, '
                                 'probe_interval_s 1-86400, reset_after 1-100)');
    end;
    return v_result;
end
$$;

-- The id a pause names: a carrier code, a merchant code, or merchant/product.
create or replace function cp.pause_target(p_scope text, p_code text) returns integer
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_id integer;
begin
    if p_scope = 'carrier' then
        select carrier_id into v_id from cp.carrier where code = p_code;
    elsif p_scope = 'merchant' then
        select merchant_id into v_id from cp.merchant where code = p_code;
    elsif p_scope = 'product' then
        select p.product_id into v_id from cp.product p join cp.merchant m using (merchant_id)
        where m.code || '/' || p.code = p_code;
    else
        perform cp.fail('CP130', 'pause scope must be carrier, merchant or product');
    end if;
    if v_id is null then
        perform cp.fail('CP130', format('no %s %L', p_scope, left(p_code, 64)));
    end if;
    return v_id;
end
$$;

-- Stop sending the queued calls of a carrier, a merchant or a product (merchant/product) until
-- resumed; payments are still accepted and wait in the queue. Returns whether it was not paused yet.
create or replace function admin.pause_sending(p_scope text, p_code text, p_reason text default '') returns boolean
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_id integer := cp.pause_target(p_scope, p_code);
    v_new boolean;
begin
    insert into cp.claim_pause (scope, target_id, reason, paused_at, paused_by)
    values (p_scope, v_id, left(coalesce(p_reason, ''), 500), cp.clock_now(), cp.calling_role())
    on conflict do nothing;
    get diagnostics v_new = row_count;
    if v_new then
        perform cp.emit_event(p_scope, v_id, 'sending_paused', jsonb_build_object('reason', left(coalesce(p_reason, ''), 500)));
    end if;
    return v_new;
end
$$;

-- Send again what a pause held back. Returns whether it was paused.
create or replace function admin.resume_sending(p_scope text, p_code text) returns boolean
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_id integer := cp.pause_target(p_scope, p_code);
    v_found boolean;
begin
    delete from cp.claim_pause where scope = p_scope and target_id = v_id;
    get diagnostics v_found = row_count;
    if v_found then
        perform cp.emit_event(p_scope, v_id, 'sending_resumed');
        perform pg_catalog.pg_notify('carrierpay_calls', '');
    end if;
    return v_found;
end
$$;

-- Every carrier's breaker: thresholds, state, why, since when, trips so far, and whether it is paused.
create or replace view report.carrier_breakers as
select k.code as carrier, coalesce(b.state, 'closed') as state, b.reason, b.changed_at, coalesce(b.trips, 0) as trips,
       b.next_probe_at, coalesce(b.healthy_probes, 0) as healthy_probes,
       exists (select 1 from cp.claim_pause p where p.scope = 'carrier' and p.target_id = k.carrier_id) as paused,
       coalesce(b.error_pct, 50) as error_pct, coalesce(b.min_calls, 20) as min_calls,
       coalesce(b.window_s, 60) as window_s, coalesce(b.probe_interval_s, 30) as probe_interval_s,
       coalesce(b.reset_after, 3) as reset_after
from cp.carrier k left join cp.carrier_breaker b using (carrier_id);

-- Operator pauses in force.
create or replace view report.sending_pauses as
select p.scope, case p.scope when 'carrier' then k.code when 'merchant' then m.code
                             else pm.code || '/' || pr.code end as target,
       p.reason, p.paused_at, p.paused_by
from cp.claim_pause p
left join cp.carrier k on p.scope = 'carrier' and k.carrier_id = p.target_id
left join cp.merchant m on p.scope = 'merchant' and m.merchant_id = p.target_id
left join cp.product pr on p.scope = 'product' and pr.product_id = p.target_id
left join cp.merchant pm on pm.merchant_id = pr.merchant_id;
