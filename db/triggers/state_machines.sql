-- State machines and their events: a procedure is born in its initial state, an illegal transition
-- raises, every change writes an event; the consent log, which has no states, never changes.
-- Events are written by statement-level triggers over the transition tables, so a statement that
-- settles a batch of rows writes its events in one insert.

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

-- Consent is evidence (who agreed to what, when, how): rows are only ever added.
create or replace function cp.tg_consent__immutable() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    perform cp.fail('CP069', 'consent rows are immutable: consent is evidence, only ever added');
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
    return new;
end
$$;

-- Outbox events for new procedures and changes of their status: one insert per statement, however
-- many rows it wrote (a batch of settled charges is one statement).
drop function if exists cp.tg_procedure__event() cascade;
create or replace function cp.procedure_event_payload(p cp.procedure, p_from cp.procedure_status) returns jsonb
language sql stable
as $$
    select jsonb_build_object('kind', p.kind, 'from', p_from, 'to', p.status, 'amount_minor', p.amount_minor,
                              'currency', p.currency, 'collected_minor', p.collected_minor,
                              'refunded_minor', p.refunded_minor, 'reason', p.reason,
                              'subscriber_id', p.subscriber_id, 'subscription_id', p.subscription_id,
                              'procedure_id', p.procedure_id)
$$;

create or replace function cp.tg_procedure__created() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    insert into cp.event (aggregate_type, aggregate_id, kind, occurred_at, payload)
    select 'procedure', n.procedure_id, 'created', cp.clock_now(), cp.procedure_event_payload(n, null)
    from new_rows n order by n.procedure_id;
    return null;
end
$$;

create or replace function cp.tg_procedure__changed() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    insert into cp.event (aggregate_type, aggregate_id, kind, occurred_at, payload)
    select 'procedure', n.procedure_id, 'status_changed', cp.clock_now(), cp.procedure_event_payload(n, o.status)
    from new_rows n join old_rows o using (procedure_id)
    where n.status is distinct from o.status
    order by n.procedure_id;
    return null;
end
$$;

-- Enforce the subscription state machine.
create or replace function cp.tg_subscription__transition() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    perform cp.assert_transition('subscription', old.status::text, new.status::text);
    if new.status <> old.status then
        new.status_since := cp.clock_now();
    end if;
    return new;
end
$$;

-- Outbox events for new subscriptions and changes of their status, one insert per statement.
drop function if exists cp.tg_subscription__event() cascade;
create or replace function cp.subscription_event_payload(s cp.subscription, p_from cp.subscription_status)
returns jsonb
language sql stable
as $$
    select jsonb_build_object('from', p_from, 'to', s.status, 'next_charge_at', s.next_charge_at,
                              'paid_through', s.paid_through, 'subscriber_id', s.subscriber_id,
                              'subscription_id', s.subscription_id, 'reason', s.cancel_reason)
$$;

create or replace function cp.tg_subscription__created() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    insert into cp.event (aggregate_type, aggregate_id, kind, occurred_at, payload)
    select 'subscription', n.subscription_id, 'created', cp.clock_now(), cp.subscription_event_payload(n, null)
    from new_rows n order by n.subscription_id;
    return null;
end
$$;

create or replace function cp.tg_subscription__changed() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    insert into cp.event (aggregate_type, aggregate_id, kind, occurred_at, payload)
    select 'subscription', n.subscription_id, 'status_changed', cp.clock_now(),
           cp.subscription_event_payload(n, o.status)
    from new_rows n join old_rows o using (subscription_id)
    where n.status is distinct from o.status
    order by n.subscription_id;
    return null;
end
$$;

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

-- Outbox events for new carrier calls and changes of their status, one insert per statement.
drop function if exists cp.tg_carrier_call__event() cascade;
create or replace function cp.carrier_call_event_payload(c cp.carrier_call, p_from cp.call_status) returns jsonb
language sql stable
as $$
    select jsonb_build_object('from', p_from, 'to', c.status, 'operation', c.operation, 'attempt', c.attempt,
                              'correlator', c.correlator, 'outcome', c.outcome, 'reason', c.reason,
                              'carrier_code', c.carrier_code, 'procedure_id', c.procedure_id)
$$;

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

-- Wake the adapters of each carrier that got new work, at most once per statement, and only when
-- the carrier had no other call ready to claim. A NOTIFY takes a database-wide lock from commit
-- until the commit is flushed, so notifying on every charge would serialise all charges (no group
-- commit); adapters that have ready calls are busy and claim again without waiting for a wake-up
-- (the poll interval bounds the rare case of a call committed just after their last empty claim).
create or replace function cp.tg_call_queue__notify() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_code text;
begin
    for v_code in
        -- once per carrier of the statement, not once per row (a batch of renewals is one statement)
        select c.code from (select distinct carrier_id from new_rows) n join cp.carrier c using (carrier_id)
        where not exists (select 1 from cp.call_queue q
                          where q.carrier_id = n.carrier_id and q.lease_until is null
                            and q.available_at <= cp.clock_now()
                            and q.call_id not in (select call_id from new_rows))
    loop
        perform pg_catalog.pg_notify('carrierpay_calls', v_code);
    end loop;
    return null;
end
$$;

drop trigger if exists _100_born_pending on cp.procedure;
create trigger _100_born_pending before insert on cp.procedure
    for each row
    when (new.status <> 'pending' or new.collected_minor <> 0 or new.refunded_minor <> 0 or new.final_at is not null)
    execute function cp.tg_procedure__born_pending();
drop trigger if exists _100_transition on cp.procedure;
create trigger _100_transition before update of status on cp.procedure
    for each row execute function cp.tg_procedure__transition();
drop trigger if exists _900_event_created on cp.procedure;
create trigger _900_event_created after insert on cp.procedure
    referencing new table as new_rows
    for each statement execute function cp.tg_procedure__created();
drop trigger if exists _900_event_changed on cp.procedure;
create trigger _900_event_changed after update on cp.procedure
    referencing old table as old_rows new table as new_rows
    for each statement execute function cp.tg_procedure__changed();

drop trigger if exists _100_transition on cp.subscription;
create trigger _100_transition before update of status on cp.subscription
    for each row execute function cp.tg_subscription__transition();
drop trigger if exists _900_event_created on cp.subscription;
create trigger _900_event_created after insert on cp.subscription
    referencing new table as new_rows
    for each statement execute function cp.tg_subscription__created();
drop trigger if exists _900_event_changed on cp.subscription;
create trigger _900_event_changed after update on cp.subscription
    referencing old table as old_rows new table as new_rows
    for each statement execute function cp.tg_subscription__changed();

drop trigger if exists _100_transition on cp.carrier_call;
create trigger _100_transition before update of status on cp.carrier_call
    for each row execute function cp.tg_carrier_call__transition();
drop trigger if exists _900_event_created on cp.carrier_call;
create trigger _900_event_created after insert on cp.carrier_call
    referencing new table as new_rows
    for each statement execute function cp.tg_carrier_call__created();
drop trigger if exists _900_event_changed on cp.carrier_call;
create trigger _900_event_changed after update on cp.carrier_call
    referencing old table as old_rows new table as new_rows
    for each statement execute function cp.tg_carrier_call__changed();

drop trigger if exists _900_notify on cp.call_queue;
create trigger _900_notify after insert on cp.call_queue
    referencing new table as new_rows
    for each statement execute function cp.tg_call_queue__notify();

drop trigger if exists _100_immutable on cp.consent;
create trigger _100_immutable before update or delete on cp.consent
    for each row execute function cp.tg_consent__immutable();
drop trigger if exists _101_immutable_truncate on cp.consent;
create trigger _101_immutable_truncate before truncate on cp.consent
    for each statement execute function cp.tg_consent__immutable();
