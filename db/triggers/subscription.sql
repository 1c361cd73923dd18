-- Triggers on cp.subscription, in firing order: an illegal transition raises (_100), every creation
-- and change writes an outbox event (_900), one insert per statement, the merchant's webhooks of
-- what changed (_910), and what the statement changed in the subscription counts (_920).

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
    select 'subscription', n.subscription_id, 'created', (select cp.clock_now()), cp.subscription_event_payload(n, null)
    from new_rows n order by n.subscription_id;
    return null;
end
$$;

-- The _900 event of each row whose status changed, one insert per statement. No nested loop, as in
-- cp.tg_carrier_call__changed.
create or replace function cp.tg_subscription__changed() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
set enable_nestloop = off
as $$
begin
    insert into cp.event (aggregate_type, aggregate_id, kind, occurred_at, payload)
    select 'subscription', n.subscription_id, 'status_changed', (select cp.clock_now()),
           cp.subscription_event_payload(n, o.status)
    from new_rows n join old_rows o using (subscription_id)
    where n.status is distinct from o.status
    order by n.subscription_id;
    return null;
end
$$;

-- The merchant's webhooks for what happened to its subscriptions in this statement (signed and sent like
-- every notification): activated (the opt-in confirmed), renewed (a later period paid) and, when that
-- period was paid at a lower price point than the plan's, stepped_down too; suspended; resumed (paid
-- again after a suspension). Cancellation is notified where it is decided (cp.cancel_subscription,
-- 150_renewals.sql), with its reason.
-- Planned for each statement (EXECUTE): it needs what each row was before (status, period), and a
-- static join of the transition tables keeps the plan of the session's first, often one-row, statement,
-- quadratic over a batch of renewals. Its lookups of other tables call for nested loops, so the event
-- triggers' remedy (no nested loop) does not fit; a statement that changes one subscription is an
-- API call, where planning costs little beside the rest.
create or replace function cp.tg_subscription__merchant_events() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    execute $q$
    insert into cp.merchant_notification (merchant_id, kind, procedure_id, subscription_id, payload,
                                          next_attempt_at, created_at)
    select n.merchant_id, e.kind, e.payment_id, n.subscription_id,
           cp.subscription_document(n.subscription_id) || e.extra, (select cp.clock_now()), (select cp.clock_now())
    from new_rows n
    join old_rows o using (subscription_id)
    join cp.merchant m on m.merchant_id = n.merchant_id and m.webhook_url is not null
    -- The charge that paid a new period; looked up only for rows whose period moved on.
    left join lateral (select c.procedure_id, c.amount_minor, c.currency, c.variant, c.metadata
                       from cp.procedure c
                       where n.period_index > o.period_index
                         and c.subscription_id = n.subscription_id and c.kind = 'charge' and c.status = 'succeeded'
                       order by c.procedure_id desc limit 1) paid on true
    cross join lateral (
        select 'subscription.activated' as kind, null::bigint as payment_id, '{}'::jsonb as extra
         where o.status = 'pending_optin' and n.status = 'active'
        union all
        select 'subscription.suspended', null, '{}' where n.status = 'suspended' and o.status <> 'suspended'
        union all
        select 'subscription.resumed', paid.procedure_id, '{}' where o.status = 'suspended' and n.status = 'active'
        union all
        select k.kind, paid.procedure_id,
               jsonb_strip_nulls(jsonb_build_object('payment_id', paid.procedure_id, 'amount_minor', paid.amount_minor,
                                                    'currency', paid.currency, 'variant', paid.variant,
                                                    'plan_amount_minor', pp.amount_minor))
          from cp.price_point pp,
               unnest(array['subscription.renewed', 'subscription.stepped_down']) k(kind)
         where o.period_index >= 1 and n.period_index > o.period_index and n.status <> 'cancelled'
           and pp.price_point_id = n.price_point_id
           and (k.kind = 'subscription.renewed'
                or (paid.amount_minor < pp.amount_minor and not coalesce(paid.metadata ? 'partial', false)))
    ) e
    order by n.subscription_id, e.kind
    $q$;
    return null;
end
$$;

-- The reports count subscriptions from cp.subscription_count; each statement appends its net change per
-- carrier, merchant, status and unpaid, and sched.fold_rollups moves it into the counts: no counter row
-- that concurrent renewals would queue on. The subscriptions a statement created:
create or replace function cp.tg_subscription__counts_created() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    insert into cp.subscription_count_delta (carrier_id, merchant_id, status, unpaid, subscriptions)
    select n.carrier_id, n.merchant_id, n.status, coalesce(n.cancel_reason = 'unpaid', false), count(*)
    from new_rows n
    group by 1, 2, 3, 4;
    return null;
end
$$;

-- The counts a statement moved between statuses (nothing when only other columns changed, as at a renewal).
create or replace function cp.tg_subscription__counts_changed() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    insert into cp.subscription_count_delta (carrier_id, merchant_id, status, unpaid, subscriptions)
    select x.carrier_id, x.merchant_id, x.status, x.unpaid, sum(x.n)
    from (select n.carrier_id, n.merchant_id, n.status, coalesce(n.cancel_reason = 'unpaid', false) as unpaid,
                 1 as n
          from new_rows n
          union all
          select o.carrier_id, o.merchant_id, o.status, coalesce(o.cancel_reason = 'unpaid', false), -1
          from old_rows o) x
    group by 1, 2, 3, 4
    having sum(x.n) <> 0;
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
create or replace trigger _910_merchant_events after update on cp.subscription
    referencing old table as old_rows new table as new_rows
    for each statement execute function cp.tg_subscription__merchant_events();
create or replace trigger _920_counts_created after insert on cp.subscription
    referencing new table as new_rows
    for each statement execute function cp.tg_subscription__counts_created();
create or replace trigger _920_counts_changed after update on cp.subscription
    referencing old table as old_rows new table as new_rows
    for each statement execute function cp.tg_subscription__counts_changed();
