-- Triggers on cp.carrier_call, in firing order (row triggers by name before each row, statement
-- triggers by name after the statement): the state machine (_100), the receipt wait (_110), the
-- scrubbing of a sensitive SMS (_120), the outbox events (_900), then receipts that arrived before
-- their call (_950), so the history shows the call waiting before it is settled.

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

-- Note when a call starts waiting for its receipt, so adapter.expire_awaiting can time the wait.
create or replace function cp.tg_carrier_call__awaiting_since() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    if new.status = 'awaiting_result' and old.status is distinct from 'awaiting_result' then
        new.awaiting_since := cp.clock_now();
    end if;
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

-- Outbox events for new carrier calls and changes of their status, one insert per statement.
create or replace function cp.carrier_call_event_payload(c cp.carrier_call, p_from cp.call_status) returns jsonb
language sql stable
as $$
    select jsonb_build_object('from', p_from, 'to', c.status, 'operation', c.operation, 'attempt', c.attempt,
                              'correlator', c.correlator, 'outcome', c.outcome, 'reason', c.reason,
                              'carrier_code', c.carrier_code, 'procedure_id', c.procedure_id)
$$;

-- The _900 event of each new row, one insert per statement.
create or replace function cp.tg_carrier_call__created() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    insert into cp.event (aggregate_type, aggregate_id, kind, occurred_at, payload)
    select 'carrier_call', n.call_id, 'created', cp.clock_now(), cp.carrier_call_event_payload(n, null)
    from new_rows n order by n.call_id;
    return null;
end
$$;

-- The _900 event of each row whose status changed, one insert per statement.
create or replace function cp.tg_carrier_call__changed() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    insert into cp.event (aggregate_type, aggregate_id, kind, occurred_at, payload)
    select 'carrier_call', n.call_id, 'status_changed', cp.clock_now(), cp.carrier_call_event_payload(n, o.status)
    from new_rows n join old_rows o using (call_id)
    where n.status is distinct from o.status
    order by n.call_id;
    return null;
end
$$;

-- Calls that just learnt their carrier id: apply receipts that arrived before them (kept in the inbox).
create or replace function cp.tg_carrier_call__rematch() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    perform cp.rematch_callbacks(n.call_id)
    from new_rows n join old_rows o using (call_id)
    where n.carrier_ref is not null and n.carrier_ref is distinct from o.carrier_ref
      and n.status in ('awaiting_result', 'unknown')
    order by n.call_id;
    return null;
end
$$;

create or replace trigger _100_transition before update of status on cp.carrier_call
    for each row execute function cp.tg_carrier_call__transition();
create or replace trigger _110_awaiting_since before update of status on cp.carrier_call
    for each row execute function cp.tg_carrier_call__awaiting_since();
create or replace trigger _120_scrub_sensitive before update of status on cp.carrier_call
    for each row
    when (new.operation = 'send_sms' and new.status in ('awaiting_result', 'done', 'failed', 'unknown')
          and new.params->>'sensitive' = 'true' and new.params->>'redacted' is null)
    execute function cp.tg_carrier_call__scrub_sensitive();
create or replace trigger _900_event_created after insert on cp.carrier_call
    referencing new table as new_rows
    for each statement execute function cp.tg_carrier_call__created();
create or replace trigger _900_event_changed after update on cp.carrier_call
    referencing old table as old_rows new table as new_rows
    for each statement execute function cp.tg_carrier_call__changed();
create or replace trigger _950_rematch_callbacks after update on cp.carrier_call
    referencing old table as old_rows new table as new_rows
    for each statement execute function cp.tg_carrier_call__rematch();
