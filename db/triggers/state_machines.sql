-- State machines and their events: an illegal transition raises; every change writes an event.

-- Enforce the procedure state machine and keep its timestamps.
create or replace function cp.tg_procedure__transition() returns trigger
language plpgsql
set search_path = pg_catalog, cp
as $$
begin
    perform cp.assert_transition('procedure', old.status::text, new.status::text);
    new.updated_at := cp.clock_now();
    if new.status in ('succeeded', 'failed') and old.status not in ('succeeded', 'failed') then
        new.final_at := new.updated_at;
    end if;
    return new;
end
$$;

-- Outbox event for a new procedure or a change of its status.
create or replace function cp.tg_procedure__event() returns trigger
language plpgsql
set search_path = pg_catalog, cp
as $$
begin
    perform cp.emit_event('procedure', new.procedure_id,
        case when tg_op = 'INSERT' then 'created' else 'status_changed' end,
        jsonb_build_object('kind', new.kind, 'from', case when tg_op = 'UPDATE' then old.status end,
                           'to', new.status, 'amount_minor', new.amount_minor, 'currency', new.currency,
                           'collected_minor', new.collected_minor, 'refunded_minor', new.refunded_minor,
                           'reason', new.reason, 'subscriber_id', new.subscriber_id,
                           'subscription_id', new.subscription_id, 'procedure_id', new.procedure_id));
    return null;
end
$$;

-- Enforce the subscription state machine.
create or replace function cp.tg_subscription__transition() returns trigger
language plpgsql
set search_path = pg_catalog, cp
as $$
begin
    perform cp.assert_transition('subscription', old.status::text, new.status::text);
    if new.status <> old.status then
        new.status_since := cp.clock_now();
    end if;
    return new;
end
$$;

-- Outbox event for a new subscription or a change of its status.
create or replace function cp.tg_subscription__event() returns trigger
language plpgsql
set search_path = pg_catalog, cp
as $$
begin
    perform cp.emit_event('subscription', new.subscription_id,
        case when tg_op = 'INSERT' then 'created' else 'status_changed' end,
        jsonb_build_object('from', case when tg_op = 'UPDATE' then old.status end, 'to', new.status,
                           'next_charge_at', new.next_charge_at, 'paid_through', new.paid_through,
                           'subscriber_id', new.subscriber_id, 'subscription_id', new.subscription_id,
                           'reason', new.cancel_reason));
    return null;
end
$$;

-- Enforce the carrier call state machine.
create or replace function cp.tg_carrier_call__transition() returns trigger
language plpgsql
set search_path = pg_catalog, cp
as $$
begin
    perform cp.assert_transition('carrier_call', old.status::text, new.status::text);
    if new.status in ('done', 'failed') and old.status not in ('done', 'failed') then
        new.finished_at := cp.clock_now();
    end if;
    return new;
end
$$;

-- Outbox event for a new carrier call or a change of its status.
create or replace function cp.tg_carrier_call__event() returns trigger
language plpgsql
set search_path = pg_catalog, cp
as $$
begin
    perform cp.emit_event('carrier_call', new.call_id,
        case when tg_op = 'INSERT' then 'created' else 'status_changed' end,
        jsonb_build_object('from', case when tg_op = 'UPDATE' then old.status end, 'to', new.status,
                           'operation', new.operation, 'attempt', new.attempt, 'correlator', new.correlator,
                           'outcome', new.outcome, 'reason', new.reason, 'carrier_code', new.carrier_code,
                           'procedure_id', new.procedure_id));
    return null;
end
$$;

-- Wake the adapters of each carrier that got new work, at most once per statement, and only when
-- the carrier had no other call ready to claim. A NOTIFY takes a database-wide lock from commit
-- until the commit is flushed, so notifying on every charge would serialise all charges (no group
-- commit); adapters that have ready calls are busy and claim again without waiting for a wake-up
-- (the poll interval bounds the rare case of a call committed just after their last empty claim).
create or replace function cp.tg_call_queue__notify() returns trigger
language plpgsql
set search_path = pg_catalog, cp
as $$
declare
    v_code text;
begin
    for v_code in
        select distinct c.code from new_rows n join cp.carrier c using (carrier_id)
        where not exists (select 1 from cp.call_queue q
                          where q.carrier_id = n.carrier_id and q.lease_until is null
                            and q.available_at <= cp.clock_now()
                            and q.call_id not in (select call_id from new_rows))
    loop
        perform pg_notify('carrierpay_calls', v_code);
    end loop;
    return null;
end
$$;

drop trigger if exists _100_transition on cp.procedure;
create trigger _100_transition before update of status on cp.procedure
    for each row execute function cp.tg_procedure__transition();
drop trigger if exists _900_event_created on cp.procedure;
create trigger _900_event_created after insert on cp.procedure
    for each row execute function cp.tg_procedure__event();
drop trigger if exists _900_event_changed on cp.procedure;
create trigger _900_event_changed after update of status on cp.procedure
    for each row when (old.status is distinct from new.status) execute function cp.tg_procedure__event();

drop trigger if exists _100_transition on cp.subscription;
create trigger _100_transition before update of status on cp.subscription
    for each row execute function cp.tg_subscription__transition();
drop trigger if exists _900_event_created on cp.subscription;
create trigger _900_event_created after insert on cp.subscription
    for each row execute function cp.tg_subscription__event();
drop trigger if exists _900_event_changed on cp.subscription;
create trigger _900_event_changed after update of status on cp.subscription
    for each row when (old.status is distinct from new.status) execute function cp.tg_subscription__event();

drop trigger if exists _100_transition on cp.carrier_call;
create trigger _100_transition before update of status on cp.carrier_call
    for each row execute function cp.tg_carrier_call__transition();
drop trigger if exists _900_event_created on cp.carrier_call;
create trigger _900_event_created after insert on cp.carrier_call
    for each row execute function cp.tg_carrier_call__event();
drop trigger if exists _900_event_changed on cp.carrier_call;
create trigger _900_event_changed after update of status on cp.carrier_call
    for each row when (old.status is distinct from new.status) execute function cp.tg_carrier_call__event();

drop trigger if exists _900_notify on cp.call_queue;
create trigger _900_notify after insert on cp.call_queue
    referencing new table as new_rows
    for each statement execute function cp.tg_call_queue__notify();
