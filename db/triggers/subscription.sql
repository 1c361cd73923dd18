-- Triggers on cp.subscription, in firing order: an illegal transition raises (_100), every creation
-- and change writes an outbox event (_900), one insert per statement.

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
create or replace function cp.subscription_event_payload(s cp.subscription, p_from cp.subscription_status)
returns jsonb
language sql stable
as $$
    select jsonb_build_object('from', p_from, 'to', s.status, 'next_charge_at', s.next_charge_at,
                              'paid_through', s.paid_through, 'subscriber_id', s.subscriber_id,
                              'subscription_id', s.subscription_id, 'reason', s.cancel_reason)
$$;

-- The _900 event of each new row, one insert per statement.
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

-- The _900 event of each row whose status changed, one insert per statement.
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

create or replace trigger _100_transition before update of status on cp.subscription
    for each row execute function cp.tg_subscription__transition();
create or replace trigger _900_event_created after insert on cp.subscription
    referencing new table as new_rows
    for each statement execute function cp.tg_subscription__created();
create or replace trigger _900_event_changed after update on cp.subscription
    referencing old table as old_rows new table as new_rows
    for each statement execute function cp.tg_subscription__changed();

-- Payment rows refer to this table without foreign keys: its rows are never deleted (cp.tg_parent__never_deleted).
create or replace trigger _050_never_deleted before delete on cp.subscription
    for each row execute function cp.tg_parent__never_deleted();
create or replace trigger _051_never_truncated before truncate on cp.subscription
    for each statement execute function cp.tg_parent__never_deleted();
