-- Triggers on cp.carrier_call, in firing order (row triggers by name before each row, statement
-- triggers by name after the statement): the state machine (_100), the receipt wait (_110), the
-- scrubbing of a sensitive SMS (_120), the message ids a callback may name (_130), the outbox events
-- (_900), then receipts that arrived before their call (_950), so the history shows the call waiting before it is settled,
-- then the reservations of two-step calls that settled (_960).

-- Enforce the carrier call state machine.
create or replace function cp.tg_carrier_call__transition() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    perform cp.assert_transition('carrier_call', old.status::text, new.status::text);
    if new.status in ('done', 'failed') and old.status not in ('done', 'failed') then
        new.finished_at := cp.clock_now();
    end if;
    return new;
end
$$;

-- Note when a call starts waiting for its receipt, so adapter.expire_awaiting can time the wait, and
-- forget it when the wait ends: the wait index (carrier_call_awaiting) holds only the calls waiting.
create or replace function cp.tg_carrier_call__awaiting_since() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    new.awaiting_since := case when new.status = 'awaiting_result' then cp.clock_now() end;
    return new;
end
$$;

-- The ids a callback may name a call by (an SMSC's message ids, one per part of an SMS or premium
-- MT), from the carrier reference its adapter reports (joined by ','), for delivery receipts to find
-- it (carrier_call_message_ids). Only calls answered by callback have them: recording the reference
-- of a call answered at once changes no indexed column, so it stays a HOT update.
create or replace function cp.tg_carrier_call__message_ids() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    new.message_ids := string_to_array(new.carrier_ref, ',');
    return new;
end
$$;

-- A sensitive SMS (a PIN) that the carrier has (sent, accepted, failed for good or lost on the
-- way) needs its text no more: the text is replaced by its redacted form in the statement that
-- records the outcome, so no later read, copy or backup of the row holds the secret. A call going
-- back to the queue (throttled, unreachable, lease expired) keeps it; a new attempt after a failure
-- copies the text as it was sent (cp.apply_call_result).
create or replace function cp.tg_carrier_call__scrub_sensitive() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    new.params := (new.params - 'redacted_text')
                  || jsonb_build_object('text', coalesce(new.params->>'redacted_text', '[redacted]'), 'redacted', true);
    return new;
end
$$;

-- Outbox events for new carrier calls and changes of their status, one insert per statement. An
-- event says what changed, not what the row already said: the call's kind and attempt when it is
-- created, the outcome when there is one. The procedure is named for the history's timeline.
create or replace function cp.carrier_call_event_payload(c cp.carrier_call, p_from cp.call_status) returns jsonb
language sql stable
as $$
    select jsonb_strip_nulls(case when p_from is null
        then jsonb_build_object('to', c.status, 'operation', c.operation, 'attempt', c.attempt,
                                'procedure_id', c.procedure_id)
        else jsonb_build_object('from', p_from, 'to', c.status, 'outcome', c.outcome, 'reason', c.reason,
                                'carrier_code', c.carrier_code, 'procedure_id', c.procedure_id) end)
$$;

-- The _900 event of each new row, one insert per statement.
create or replace function cp.tg_carrier_call__created() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    insert into cp.event (aggregate_type, aggregate_id, kind, occurred_at, payload)
    select 'carrier_call', n.call_id, 'created', (select cp.clock_now()), cp.carrier_call_event_payload(n, null)
    from new_rows n order by n.call_id;
    return null;
end
$$;

-- The _900 event of each row whose status changed, one insert per statement.
-- No nested loop: a trigger's static statement keeps the plan of its first run in the session, and a
-- one-row first run nests one transition table's scan in the other, quadratic over a later batch
-- (docs/architecture.md, "State machines"); a hash join of the two is right at every size.
create or replace function cp.tg_carrier_call__changed() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
set enable_nestloop = off
as $$
begin
    insert into cp.event (aggregate_type, aggregate_id, kind, occurred_at, payload)
    select 'carrier_call', n.call_id, 'status_changed', (select cp.clock_now()), cp.carrier_call_event_payload(n, o.status)
    from new_rows n join old_rows o using (call_id)
    where n.status is distinct from o.status
    order by n.call_id;
    return null;
end
$$;

-- Calls that just learnt their carrier id: apply receipts that arrived before them (kept in the inbox).
-- What a call's id was before the statement is looked up in a hashed set (NOT IN), not joined to
-- old_rows (see cp.tg_carrier_call__changed); a call that had no id is not in the set.
create or replace function cp.tg_carrier_call__rematch() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    perform cp.rematch_callbacks(n.call_id)
    from new_rows n
    where n.carrier_ref is not null and n.status in ('awaiting_result', 'unknown')
      and (n.call_id, n.carrier_ref) not in (select o.call_id, o.carrier_ref from old_rows o
                                             where o.carrier_ref is not null)
    order by n.call_id;
    return null;
end
$$;

-- Two-step calls that have just settled: their reservations are captured or released
-- (cp.settle_reservations). Most calls hold none: one probe of cp.reservation's key per settled call.
-- Calls already settled before the statement are a hashed set (NOT IN), as in cp.tg_carrier_call__rematch.
create or replace function cp.tg_carrier_call__settle_reservations() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_calls bigint[];
begin
    select array_agg(n.call_id order by n.call_id) into v_calls
    from new_rows n
    where n.status in ('done', 'failed')
      and n.call_id not in (select o.call_id from old_rows o where o.status in ('done', 'failed'))
      and exists (select 1 from cp.reservation r where r.call_id = n.call_id and r.status in ('held', 'lapsed'));
    if v_calls is not null then
        perform cp.settle_reservations(v_calls);
    end if;
    return null;
end
$$;

create or replace trigger _100_transition before update of status on cp.carrier_call
    for each row execute function cp.tg_carrier_call__transition();
create or replace trigger _110_awaiting_since before update of status on cp.carrier_call
    for each row
    when ((new.status = 'awaiting_result') is distinct from (old.status = 'awaiting_result'))
    execute function cp.tg_carrier_call__awaiting_since();
create or replace trigger _120_scrub_sensitive before update of status on cp.carrier_call
    for each row
    when (new.operation = 'send_sms' and new.status in ('awaiting_result', 'done', 'failed', 'unknown')
          and new.params->>'sensitive' = 'true' and new.params->>'redacted' is null)
    execute function cp.tg_carrier_call__scrub_sensitive();
create or replace trigger _130_message_ids before update of carrier_ref on cp.carrier_call
    for each row
    when (new.pattern = 'callback' and new.carrier_ref is distinct from old.carrier_ref)
    execute function cp.tg_carrier_call__message_ids();
create or replace trigger _900_event_created after insert on cp.carrier_call
    referencing new table as new_rows
    for each statement execute function cp.tg_carrier_call__created();
create or replace trigger _900_event_changed after update on cp.carrier_call
    referencing old table as old_rows new table as new_rows
    for each statement execute function cp.tg_carrier_call__changed();
create or replace trigger _950_rematch_callbacks after update on cp.carrier_call
    referencing old table as old_rows new table as new_rows
    for each statement execute function cp.tg_carrier_call__rematch();

create or replace trigger _960_settle_reservations after update on cp.carrier_call
    referencing old table as old_rows new table as new_rows
    for each statement execute function cp.tg_carrier_call__settle_reservations();

-- Payment rows refer to this table without foreign keys: its rows are never deleted (cp.tg_parent__never_deleted).
create or replace trigger _050_never_deleted before delete on cp.carrier_call
    for each row execute function cp.tg_parent__never_deleted();
create or replace trigger _051_never_truncated before truncate on cp.carrier_call
    for each statement execute function cp.tg_parent__never_deleted();
