-- Triggers on cp.procedure, in firing order: a procedure is born in its initial state (_100), an
-- illegal transition raises (_100), every creation and change writes an outbox event (_900), a failed
-- refund notifies its merchant (_910). Events
-- are written by statement-level triggers over the transition tables, so a statement that settles a
-- batch of rows writes its events in one insert.

-- A procedure is born pending with nothing collected, refunded or final: every other state is
-- reached through the transitions (and the journals that go with them). Fired only for a row that
-- breaks this (the trigger's WHEN), so a well-formed insert costs nothing.
create or replace function cp.tg_procedure__born_pending() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    perform cp.fail('CP068', format('a procedure is created pending with nothing collected or refunded, not %s '
                                    '(collected %s, refunded %s)', new.status, new.collected_minor,
                                    new.refunded_minor));
    return null;
end
$$;

-- Enforce the procedure state machine and keep its timestamps.
create or replace function cp.tg_procedure__transition() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    perform cp.assert_transition('procedure', old.status::text, new.status::text);
    new.updated_at := cp.clock_now();
    if new.status in ('succeeded', 'failed') and old.status not in ('succeeded', 'failed') then
        new.final_at := new.updated_at;
    end if;
    if new.status = 'failed' then
        new.holds_period := null;  -- a failed charge leaves its period to the next attempt
    end if;
    return new;
end
$$;

-- Outbox events for new procedures and changes of their status: one insert per statement, however
-- many rows it wrote (a batch of settled charges is one statement). An event says what changed, not
-- what the row already said.
create or replace function cp.procedure_event_payload(p cp.procedure, p_from cp.procedure_status) returns jsonb
language sql stable
as $$
    -- Created: the payment's facts. Changed: the new status, and the amount or reason that came with it.
    select jsonb_strip_nulls(case when p_from is null
        then jsonb_build_object('kind', p.kind, 'to', p.status, 'amount_minor', p.amount_minor,
                                'currency', p.currency, 'subscriber_id', p.subscriber_id,
                                'subscription_id', p.subscription_id, 'parent_id', p.parent_id)
        else jsonb_build_object('from', p_from, 'to', p.status, 'reason', p.reason,
                                'collected_minor', nullif(p.collected_minor, 0),
                                'refunded_minor', nullif(p.refunded_minor, 0)) end)
$$;

-- The _900 event of each new row, one insert per statement.
create or replace function cp.tg_procedure__created() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    insert into cp.event (aggregate_type, aggregate_id, kind, occurred_at, payload)
    select 'procedure', n.procedure_id, 'created', (select cp.clock_now()), cp.procedure_event_payload(n, null)
    from new_rows n order by n.procedure_id;
    return null;
end
$$;

-- The _900 event of each row whose status changed, one insert per statement. No nested loop, as in
-- cp.tg_carrier_call__changed.
create or replace function cp.tg_procedure__changed() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
set enable_nestloop = off
as $$
begin
    insert into cp.event (aggregate_type, aggregate_id, kind, occurred_at, payload)
    select 'procedure', n.procedure_id, 'status_changed', (select cp.clock_now()), cp.procedure_event_payload(n, o.status)
    from new_rows n join old_rows o using (procedure_id)
    where n.status is distinct from o.status
    order by n.procedure_id;
    return null;
end
$$;

-- A refund that failed for good: the merchant's refund.failed webhook (its money was not returned to the
-- subscriber), whichever way it failed: the carrier's answer, a reconciliation, an operator's settlement.
create or replace function cp.tg_procedure__refund_failed() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    perform cp.notify_merchant(new.merchant_id, 'refund.failed', cp.procedure_document(new), new.procedure_id);
    return null;
end
$$;

create or replace trigger _100_born_pending before insert on cp.procedure
    for each row
    when (new.status <> 'pending' or new.collected_minor <> 0 or new.refunded_minor <> 0 or new.final_at is not null)
    execute function cp.tg_procedure__born_pending();
create or replace trigger _100_transition before update of status on cp.procedure
    for each row execute function cp.tg_procedure__transition();
create or replace trigger _900_event_created after insert on cp.procedure
    referencing new table as new_rows
    for each statement execute function cp.tg_procedure__created();
create or replace trigger _900_event_changed after update on cp.procedure
    referencing old table as old_rows new table as new_rows
    for each statement execute function cp.tg_procedure__changed();

-- Payment rows refer to this table without foreign keys: its rows are never deleted (cp.tg_parent__never_deleted).
create or replace trigger _050_never_deleted before delete on cp.procedure
    for each row execute function cp.tg_parent__never_deleted();
create or replace trigger _051_never_truncated before truncate on cp.procedure
    for each statement execute function cp.tg_parent__never_deleted();
-- A payment or refund made through the HTTP API with a sink: its final state is posted there as a
-- CloudEvent, by the webhook dispatcher like any merchant notification (retries, back-off, the
-- destination policy). One insert per statement, and only for rows that have a sink.
create or replace function cp.tg_procedure__notify_sink() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    insert into cp.merchant_notification (merchant_id, kind, procedure_id, payload, next_attempt_at, created_at,
                                          to_sink)
    select n.merchant_id, 'camara.' || n.kind, n.procedure_id, cp.camara_event(n), (select cp.clock_now()), (select cp.clock_now()), true
    from new_rows n
    join cp.notification_sink s on s.procedure_id = n.procedure_id
    where n.status in ('succeeded', 'failed') and n.merchant_id is not null
      -- what each row was before the statement: a hashed set, as in cp.tg_carrier_call__rematch
      and (n.procedure_id, n.status) not in (select o.procedure_id, o.status from old_rows o)
    order by n.procedure_id;
    return null;
end
$$;
create or replace trigger _950_notify_sink after update on cp.procedure
    referencing old table as old_rows new table as new_rows
    for each statement execute function cp.tg_procedure__notify_sink();
-- Row-level with a WHEN, so a charge's update never calls it.
create or replace trigger _910_refund_failed after update of status on cp.procedure
    for each row
    when (new.kind = 'refund' and new.status = 'failed' and old.status <> 'failed')
    execute function cp.tg_procedure__refund_failed();
