-- The scheduler's entry points (schema sched): due renewals turned into queued charges, and reminders.

-- A renewal is due when its subscription is live (active, retrying, in grace, or suspended: a
-- suspended one is still tried) and its next charge time has come. The one rule sched.run_due and
-- sched.due_left share; it has no SET clause so that the planner inlines it, and the partial index
-- subscription_due (whose predicate is the same status list) serves both.
create or replace function sched.renewal_due(p_status cp.subscription_status, p_next_charge_at timestamptz)
returns boolean
language sql stable
as $$
    select p_status in ('active', 'retrying', 'grace', 'suspended') and p_next_charge_at <= cp.clock_now()
$$;

-- How many renewals are due now on enabled carriers. A run_due batch that only moved rows to their
-- next slot (outside the charging window, out of attempts today) queues fewer than a batch while more
-- are due, so a scheduler asks this before it stops (carrierpay/scheduler.py, `queue_due`).
create or replace function sched.due_left() returns bigint
language sql stable security definer
set search_path = pg_catalog, cp, pg_temp
as $$
    select count(*) from cp.subscription s join cp.carrier c using (carrier_id)
    where c.enabled and sched.renewal_due(s.status, s.next_charge_at)
$$;

-- Queue charges for subscriptions that are due, in batches, carrier by carrier. Several
-- schedulers may run at once: each due row is locked (SKIP LOCKED) and its next_charge_at
-- cleared in the same transaction, and a carrier's budget is computed by one scheduler at a
-- time (advisory lock), so the queue never holds more than tps × p_lookahead_s calls ready within
-- the lookahead. Each run also folds in the PIN checks of expired opt-ins (cp.close_pin_checks).
create or replace function sched.run_due(p_limit integer default 1000, p_lookahead_s integer default 60)
returns integer
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_carrier cp.carrier;
    v_rules jsonb;
    v_room integer;
    v_start bigint[];
    v_later bigint[];
    v_query bigint[];
    v_count integer := 0;
begin
    perform cp.close_pin_checks(least(p_limit, 500));
    for v_carrier in select * from cp.carrier where enabled order by carrier_id loop
        exit when v_count >= p_limit;
        continue when not pg_catalog.pg_try_advisory_xact_lock(1129336644, v_carrier.carrier_id);  -- 'CPSD'
        v_rules := cp.effective_rules(v_carrier.carrier_id);
        perform sched.queue_reminders(v_carrier, v_rules, p_limit);
        -- Calls held for later (quiet hours, a throttle pause) are not ready and take no room.
        select v_carrier.tps * p_lookahead_s - count(*) into v_room
        from cp.call_queue
        where carrier_id = v_carrier.carrier_id and lease_until is null
          and available_at <= cp.clock_now() + make_interval(secs => p_lookahead_s);
        continue when v_room <= 0;
        -- The due rows, locked: those outside the charging window or out of attempts today wait for
        -- their next slot; the others are queued together (cp.start_renewals).
        select coalesce(array_agg(d.subscription_id order by d.next_charge_at) filter (where not d.later), '{}'),
               coalesce(array_agg(d.subscription_id order by d.next_charge_at) filter (where d.later), '{}')
        into v_start, v_later
        from (
            select s.subscription_id, s.next_charge_at,
                   coalesce(not cp.in_window(l.local_now::time, v_rules->>'charging_hours')
                            or (s.attempts_day = l.local_now::date
                                and s.attempts_today >= (v_rules->>'max_attempts_per_day')::int), false) as later
            from cp.subscription s
            cross join lateral (select cp.clock_now() at time zone cp.subscriber_timezone(s.subscriber_id)
                                       as local_now) l
            where s.carrier_id = v_carrier.carrier_id and sched.renewal_due(s.status, s.next_charge_at)
            order by s.next_charge_at
            limit least(v_room, p_limit - v_count)
            for update of s skip locked
        ) d;
        if cardinality(v_later) > 0 then
            update cp.subscription s set next_charge_at = n.retry_at
            from cp.next_retry_times(v_later) n where s.subscription_id = n.subscription_id;
        end if;
        -- Where a failed charge costs the carrier more than a balance query, renewals that will likely
        -- fail are queried first (cp.renewals_to_query); the others are charged.
        if cardinality(v_start) > 0 and cp.balance_before_renewal(v_carrier.carrier_id) then
            v_query := cp.renewals_to_query(v_start);
            if cardinality(v_query) > 0 then
                v_count := v_count + cardinality(cp.start_balance_checks(v_query));
                v_start := array(select u.id from unnest(v_start) with ordinality u (id, ord)
                                 where u.id <> all (v_query) order by u.ord);
            end if;
        end if;
        if cardinality(v_start) > 0 then
            v_count := v_count + cardinality(cp.start_renewals(v_start));
        end if;
    end loop;
    return v_count;
end
$$;

-- Queue renewal reminder SMS where the regulation asks for notice (e.g. 24 h before an Indian
-- renewal), once per period. Quiet hours hold the SMS back; they never drop it.
create or replace function sched.queue_reminders(p_carrier cp.carrier, p_rules jsonb, p_limit integer)
returns integer
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_notice interval := make_interval(hours => (p_rules->>'renewal_notice_hours')::int);
    v_sub record;
    v_count integer := 0;
begin
    if v_notice is null then
        return 0;
    end if;
    for v_sub in
        select s.subscription_id, s.subscriber_id, s.merchant_id, s.period_index, s.next_charge_at,
               p.name as product_name, m.name as merchant_name,
               (cp.renewal_price_point(s, 0)).amount_minor as amount
        from cp.subscription s join cp.product p using (product_id) join cp.merchant m on m.merchant_id = s.merchant_id
        where s.carrier_id = p_carrier.carrier_id and s.status = 'active'
          and s.next_charge_at <= cp.clock_now() + v_notice and s.next_charge_at > cp.clock_now()
          and s.reminded_period is distinct from s.period_index
        limit p_limit
        for update of s skip locked
    loop
        perform cp.queue_sms(v_sub.subscriber_id,
            cp.sms_text('reminder', v_sub.subscriber_id, jsonb_build_object(
                'product', v_sub.product_name, 'merchant', v_sub.merchant_name,
                'renews_at', to_char(v_sub.next_charge_at at time zone cp.subscriber_timezone(v_sub.subscriber_id),
                                     'DD Mon HH24:MI'),
                'amount', cp.format_major(v_sub.amount, p_carrier.currency), 'currency', p_carrier.currency)),
            'reminder', v_sub.merchant_id);
        update cp.subscription set reminded_period = period_index where subscription_id = v_sub.subscription_id;
        v_count := v_count + 1;
    end loop;
    return v_count;
end
$$;
