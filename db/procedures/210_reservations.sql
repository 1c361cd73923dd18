-- Two-step payments (CAMARA preparePayment / validatePayment / confirmPayment / cancelPayment), as a
-- held charge: prepare checks the charge as api.charge would (number, price point, regulation, caps)
-- and creates the charge procedure, pending, without a carrier call; where the regulation wants an
-- opt-in for a purchase it also sends the PIN, and validate checks it (api.confirm_optin). The carrier
-- is asked for the money only at confirm, which queues the charge; cancel fails the procedure, and
-- nothing was ever sent. The step is kept in the procedure's metadata (`camara.step`).

-- The merchant's charge prepared in two steps, locked, with its step; CP124 for a one-step payment
-- (whose charge is already on its way: as good as confirmed).
create or replace function cp.prepared_charge(p_merchant_id integer, p_payment_id text) returns cp.procedure
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_proc cp.procedure := cp.merchant_charge(p_merchant_id, p_payment_id);
begin
    select * into v_proc from cp.procedure where procedure_id = v_proc.procedure_id for update;
    if v_proc.metadata->'camara'->>'step' is null then
        perform cp.fail('CP124', format('payment %s was not prepared in two steps: it is already confirmed',
                                        v_proc.procedure_id));
    end if;
    return v_proc;
end
$$;

-- Record the step a prepared charge has reached.
create or replace function cp.set_camara_step(p_procedure_id bigint, p_step text) returns void
language sql
set search_path = pg_catalog, cp, pg_temp
as $$
    update cp.procedure
    set metadata = jsonb_set(metadata, '{camara,step}', to_jsonb(p_step))
    where procedure_id = p_procedure_id
$$;

-- CAMARA preparePayment: a held charge, `reserved`, or `pending_validation` with a PIN sent when the
-- carrier's regulation wants an opt-in for one-time purchases (validationInfo names the opt-in).
create or replace function api.prepare_payment(p_merchant text, p_request jsonb, p_default_product text default null)
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_tx jsonb := p_request->'amountTransaction';
    v_terms record := cp.camara_charge_terms(v_merchant.merchant_id, v_tx, p_default_product);
    v_key text := v_terms.o_key;
    v_earlier jsonb;
    v_purchase record;
    v_carrier cp.carrier;
    v_product cp.product;
    v_pp cp.price_point;
    v_subscriber cp.subscriber;
    v_rules jsonb;
    v_optin cp.optin;
    v_proc cp.procedure;
    v_metadata jsonb;
begin
    v_earlier := cp.idempotency_begin(v_merchant.merchant_id, v_key, 'prepare_payment', p_request);
    if v_earlier is not null then
        return v_earlier;
    end if;
    v_purchase := cp.one_time_purchase(v_merchant.merchant_id, v_terms.o_msisdn, v_terms.o_product, v_terms.o_amount_minor);
    v_carrier := v_purchase.o_carrier;
    v_product := v_purchase.o_product;
    v_pp := v_purchase.o_pp;
    v_subscriber := v_purchase.o_subscriber;
    v_rules := v_purchase.o_rules;
    perform cp.check_charge_rules(v_subscriber.subscriber_id, v_carrier.carrier_id, v_pp.amount_minor, v_pp.currency,
                                  v_rules);
    if coalesce((v_rules->>'optin_one_time')::boolean, false) then
        v_optin := cp.create_optin(v_merchant, v_subscriber, v_product, 'charge', null);
    end if;
    v_metadata := cp.check_metadata(jsonb_build_object('camara', jsonb_strip_nulls(jsonb_build_object(
        'amountTransaction', v_tx, 'sink', p_request->>'sink',
        'step', case when v_optin.optin_id is null then 'reserved' else 'pending_validation' end,
        'optin_id', v_optin.optin_id))));
    v_proc := cp.new_procedure('charge', v_subscriber, v_merchant.merchant_id, v_pp.amount_minor, v_pp.currency,
                               v_product.product_id, v_pp.price_point_id, v_pp.variant, p_metadata => v_metadata);
    perform cp.register_sink(v_proc.procedure_id, p_request);
    return cp.idempotency_finish(v_merchant.merchant_id, v_key, cp.camara_payment(v_proc)
        || cp.validation_info(v_optin.optin_id::text));
end
$$;

-- CAMARA validatePayment: the PIN the subscriber received, for the prepared charge's opt-in. A wrong
-- PIN is CP031 (counted all the same: checks are counted before they are compared, by a sequence).
create or replace function api.validate_payment(p_merchant text, p_payment_id text, p_request jsonb) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_proc cp.procedure := cp.prepared_charge(v_merchant.merchant_id, p_payment_id);
    v_step text := v_proc.metadata->'camara'->>'step';
begin
    if v_step = 'cancelled' then
        perform cp.fail('CP125', format('payment %s has been cancelled', v_proc.procedure_id));
    elsif v_step <> 'pending_validation' then
        perform cp.fail('CP123', format('payment %s is already validated', v_proc.procedure_id));
    end if;
    if (p_request->>'authorizationId') is distinct from (v_proc.metadata->'camara'->>'optin_id') then
        perform cp.fail('CP122', 'invalid authorizationId');
    end if;
    perform cp.confirm_pin(p_merchant, (v_proc.metadata->'camara'->>'optin_id')::bigint, p_request->>'code');
    perform cp.set_camara_step(v_proc.procedure_id, 'reserved');
    return cp.camara_payment(p) from cp.procedure p where p.procedure_id = v_proc.procedure_id;
end
$$;

-- CAMARA confirmPayment: queue the prepared charge's carrier call (the money is asked for now).
create or replace function api.confirm_payment(p_merchant text, p_payment_id text, p_request jsonb default '{}')
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_proc cp.procedure := cp.prepared_charge(v_merchant.merchant_id, p_payment_id);
    v_step text := v_proc.metadata->'camara'->>'step';
begin
    perform cp.check_prepared_step(v_proc, p_request);
    if v_step = 'pending_validation' then
        perform cp.fail('CP126', format('payment %s awaits its validation code', v_proc.procedure_id));
    end if;
    -- The money is asked for only now: a carrier disabled since the payment was prepared takes it no more.
    if not (select k.enabled from cp.carrier k where k.carrier_id = v_proc.carrier_id) then
        perform cp.fail('CP070', format('carrier of payment %s is disabled', v_proc.procedure_id));
    end if;
    if v_proc.metadata->'camara' ? 'optin_id' then
        update cp.optin set status = 'used'
        where optin_id = (v_proc.metadata->'camara'->>'optin_id')::bigint and status = 'confirmed';
    end if;
    perform cp.set_camara_step(v_proc.procedure_id, 'confirmed');
    perform cp.queue_purchase(v_proc, v_proc.amount_minor);
    return cp.camara_payment(p) from cp.procedure p where p.procedure_id = v_proc.procedure_id;
end
$$;

-- CAMARA cancelPayment: the prepared charge fails, reason cancelled; no carrier call was ever queued.
-- A confirmed one can still be cancelled while its confirmation has not reached its two-step carrier:
-- its call holds a reservation and waits on the queue (cp.unconfirmed_call); the call is given up and
-- the reservation released (cp.settle_reservations).
create or replace function api.cancel_payment(p_merchant text, p_payment_id text, p_request jsonb default '{}')
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_proc cp.procedure := cp.prepared_charge(v_merchant.merchant_id, p_payment_id);
    v_call cp.carrier_call;
begin
    if v_proc.metadata->'camara'->>'step' = 'confirmed' then
        select c.* into v_call from cp.carrier_call c
        where c.procedure_id = v_proc.procedure_id and c.operation = 'charge'
          and exists (select 1 from cp.reservation r where r.call_id = c.call_id and r.status = 'held')
        order by c.call_id desc limit 1
        for update of c;
        if found and cp.unconfirmed_call(v_call) then
            perform cp.check_prepared_step(v_proc, p_request, p_confirmed => true);
            perform cp.set_camara_step(v_proc.procedure_id, 'cancelled');
            perform cp.apply_call_result(v_call.call_id, jsonb_build_object('outcome', 'failed', 'reason', 'cancelled'));
            return cp.camara_payment(p) from cp.procedure p where p.procedure_id = v_proc.procedure_id;
        end if;
    end if;
    perform cp.check_prepared_step(v_proc, p_request);
    if v_proc.metadata->'camara' ? 'optin_id' then
        update cp.optin set status = 'expired'
        where optin_id = (v_proc.metadata->'camara'->>'optin_id')::bigint and status in ('pending', 'confirmed');
    end if;
    perform cp.set_camara_step(v_proc.procedure_id, 'cancelled');
    update cp.procedure set status = 'failed', reason = 'cancelled', final_at = cp.clock_now(), updated_at = cp.clock_now()
    where procedure_id = v_proc.procedure_id;
    return cp.camara_payment(p) from cp.procedure p where p.procedure_id = v_proc.procedure_id;
end
$$;

-- Confirm and cancel act once, on a prepared charge of the subscriber they name (our tokens name no
-- subscriber, so the request must). p_confirmed: a confirmed one may be acted on (a cancel that
-- reaches its call before the carrier does).
create or replace function cp.check_prepared_step(p_proc cp.procedure, p_request jsonb,
                                                  p_confirmed boolean default false) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    if p_proc.metadata->'camara'->>'step' = 'confirmed' and not p_confirmed then
        perform cp.fail('CP124', format('payment %s has been confirmed', p_proc.procedure_id));
    elsif p_proc.metadata->'camara'->>'step' = 'cancelled' then
        perform cp.fail('CP125', format('payment %s has been cancelled', p_proc.procedure_id));
    end if;
    if p_request->>'phoneNumber' is null then
        perform cp.fail('CP118', 'phoneNumber is required: the access token does not identify a subscriber');
    end if;
    if cp.normalize_msisdn(p_request->>'phoneNumber')
       <> (select msisdn from cp.subscriber where subscriber_id = p_proc.subscriber_id) then
        -- A number no carrier serves names no subscriber at all (CP004), rather than another one's payment.
        perform cp.carrier_for_msisdn(cp.normalize_msisdn(p_request->>'phoneNumber'));
        perform cp.fail('CP040', format('no payment %s for this phoneNumber', p_proc.procedure_id));
    end if;
end
$$;

-- Reservations at two-step carriers (the spec's `operations.<op>.two_step`: a reserve step, confirmed
-- by the steps after it, a cancel operation, the carrier's expiry). The adapter reports a reservation
-- its call made with the call's result; cp.reservation keeps it. Every way a reserved amount can no
-- longer be confirmed (the call failed for good, our confirmation window closed while it was queued, the
-- merchant cancelled it) ends in cp.release_reservation, which queues the one release call; a call that
-- succeeded captured it, and one the carrier has let lapse is never released. docs/carrier-spec.md,
-- "Two-step carriers".

-- The two-step terms of a carrier's operation: its cancel operation, how long the carrier holds a
-- reservation, and our own window to confirm it (half the carrier's unless the spec says).
create or replace function cp.two_step_terms(p_spec jsonb, p_operation text, out o_cancel text,
                                             out o_expiry_s double precision, out o_confirm_within_s double precision)
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select t->>'cancel', (t->>'expiry_s')::float8,
           coalesce((t->>'confirm_within_s')::float8, (t->>'expiry_s')::float8 / 2)
    from (select p_spec #> array['operations', p_operation, 'two_step'] as t) x
$$;

-- Keep the reservations that results of two-step calls report (`reservation`: {carrier_ref}), before
-- the results are applied, so the call's settlement finds them. The terms are read from the carrier's
-- spec, not from the adapter; the carrier's expiry is counted from when the call was answered less its
-- latency, so it is never later than the carrier's. The same reservation reported again (the carrier
-- deduplicated the repeated reserve step) is one row.
create or replace function cp.note_reservations(p_results jsonb) returns void
language sql
set search_path = pg_catalog, cp, pg_temp
as $$
    insert into cp.reservation (call_id, procedure_id, carrier_id, carrier_ref, amount_minor, cancel_operation,
                                reserved_at, confirm_by, carrier_expires_at)
    select c.call_id, c.procedure_id, c.carrier_id, left(r->'reservation'->>'carrier_ref', 200),
           coalesce((c.params->>'amount_minor')::bigint, 0), t.o_cancel, x.reserved_at,
           x.reserved_at + make_interval(secs => t.o_confirm_within_s),
           x.reserved_at + make_interval(secs => t.o_expiry_s)
    from jsonb_array_elements(p_results) r
    join cp.carrier_call c on c.call_id = (r->>'call_id')::bigint
    join cp.carrier k on k.carrier_id = c.carrier_id
    cross join lateral cp.two_step_terms(k.spec, c.operation) t
    cross join lateral (select cp.clock_now() - make_interval(secs => greatest(coalesce(
                            (r->>'latency_ms')::float8, 0), 0) / 1000) as reserved_at) x
    where jsonb_typeof(r->'reservation') = 'object' and coalesce(r->'reservation'->>'carrier_ref', '') <> ''
      and t.o_cancel is not null and t.o_expiry_s is not null
      and c.status not in ('done', 'failed')
    order by c.call_id
    on conflict (call_id, carrier_ref) do nothing
$$;

-- Queue the one release of a reservation its call can no longer confirm (p_why says why, for the event
-- and the row). Acts once: a reservation already captured, released or being released is left as it
-- is. One the carrier has let lapse by now is only marked lapsed: a cancel would find nothing held.
-- Returns the release call's id, or null when none was queued.
create or replace function cp.release_reservation(p_reservation_id bigint, p_why text) returns bigint
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_res cp.reservation;
    v_call cp.carrier_call;
    v_release bigint;
begin
    select * into v_res from cp.reservation where reservation_id = p_reservation_id for update;
    if not found or v_res.status <> 'held' then
        return null;
    end if;
    if v_res.carrier_expires_at <= cp.clock_now() then
        update cp.reservation set status = 'lapsed', release_reason = p_why, settled_at = cp.clock_now()
        where reservation_id = p_reservation_id;
        perform cp.emit_event('carrier_call', v_res.call_id, 'reservation_lapsed',
                              jsonb_build_object('reservation_id', v_res.reservation_id, 'why', p_why,
                                                 'procedure_id', v_res.procedure_id));
        return null;
    end if;
    select * into v_call from cp.carrier_call where call_id = v_res.call_id;
    v_release := cp.queue_call(v_res.procedure_id, v_res.cancel_operation,
        (v_call.params - 'original') || jsonb_build_object(
            'reservation_id', v_res.reservation_id,
            'original', jsonb_build_object('correlator', v_call.correlator, 'carrier_ref', v_res.carrier_ref,
                                           'amount_minor', v_res.amount_minor)));
    update cp.reservation set status = 'releasing', release_call_id = v_release, release_reason = p_why
    where reservation_id = p_reservation_id;
    perform cp.emit_event('carrier_call', v_res.call_id, 'reservation_release_queued',
                          jsonb_build_object('reservation_id', v_res.reservation_id, 'why', p_why,
                                             'release_call_id', v_release, 'procedure_id', v_res.procedure_id));
    return v_release;
end
$$;

-- The reservations of two-step calls that have just settled (p_call_ids, from the carrier_call trigger
-- _960_settle_reservations): a call that succeeded captured its newest reservation (one marked lapsed
-- while its outcome was unknown included); every other one still held, and all of a call that failed,
-- can no longer be confirmed and is released.
create or replace function cp.settle_reservations(p_call_ids bigint[]) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_res record;
begin
    update cp.reservation r set status = 'captured', settled_at = cp.clock_now()
    where r.reservation_id in (select distinct on (x.call_id) x.reservation_id
                               from cp.reservation x join cp.carrier_call c using (call_id)
                               where x.call_id = any (p_call_ids) and c.status = 'done'
                                 and x.status in ('held', 'lapsed')
                               order by x.call_id, x.reservation_id desc);
    for v_res in
        select r.reservation_id, c.status, c.reason
        from cp.reservation r join cp.carrier_call c using (call_id)
        where r.call_id = any (p_call_ids) and r.status = 'held' and c.status in ('done', 'failed')
        order by r.reservation_id
    loop
        perform cp.release_reservation(v_res.reservation_id,
                                       case when v_res.status = 'done' then 'superseded'
                                            else coalesce(v_res.reason, 'failed') end);
    end loop;
end
$$;

-- A release call was answered for good (from cp.apply_call_result): the reservation is released, or
-- the carrier would not release it (it had lapsed or was captured there; nothing more can be done). A
-- temporary fault (`transient`) released nothing: while the carrier still holds the reservation, the
-- release gets a new attempt (a new call, so a new correlator), at most three in all, 30 s × attempt
-- later, as a transient SMS does; it replaces the failed one as the reservation's one release.
create or replace function cp.release_answered(p_call cp.carrier_call) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_res cp.reservation;
    v_again bigint;
begin
    if p_call.status = 'failed' and p_call.reason = 'transient' and p_call.attempt < 3 then
        select * into v_res from cp.reservation
        where release_call_id = p_call.call_id and status = 'releasing' and carrier_expires_at > cp.clock_now()
        for update;
        if found then
            v_again := cp.queue_call(v_res.procedure_id, p_call.operation, p_call.params,
                                     cp.clock_now() + make_interval(secs => 30 * p_call.attempt), p_call.attempt + 1);
            update cp.reservation set release_call_id = v_again where reservation_id = v_res.reservation_id;
            return;
        end if;
    end if;
    update cp.reservation
    set status = case when p_call.status = 'done' then 'released' else 'not_released' end,
        settled_at = cp.clock_now(),
        release_reason = case when p_call.status = 'done' then release_reason
                              else coalesce(p_call.reason, 'rejected') end
    where release_call_id = p_call.call_id and status = 'releasing'
    returning * into v_res;
    if found then
        perform cp.emit_event('carrier_call', v_res.call_id, 'reservation_' || v_res.status,
                              jsonb_build_object('reservation_id', v_res.reservation_id,
                                                 'release_call_id', p_call.call_id, 'procedure_id', v_res.procedure_id));
    end if;
end
$$;

-- Whether a charge call may be given up without asking the carrier: it is queued and its last lease was
-- answered (throttled, unreachable), so no confirmation of it can be on its way. One requeued after its
-- lease ran out may have been confirmed before its adapter died, and is sent again instead.
create or replace function cp.unconfirmed_call(p_call cp.carrier_call) returns boolean
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select p_call.status = 'queued' and p_call.lease_no = coalesce(p_call.answered_lease_no, 0)
$$;

-- Reservations whose time is up (run by the reconciler each turn). A charge holding a reservation
-- that is still queued when our confirmation window closes (throttled, a paused carrier, an open
-- breaker, closed charging hours) is given up: its call fails `expired`, which releases the
-- reservation. A release still queued when the carrier's own expiry has passed is not sent (the
-- carrier has released the money itself), and a reservation still held then has lapsed.
create or replace function adapter.expire_reservations(p_limit integer default 1000) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_call cp.carrier_call;
    v_given_up integer := 0;
    v_lapsed integer := 0;
begin
    for v_call in
        select c.* from cp.reservation r join cp.carrier_call c using (call_id)
        where r.status = 'held' and r.confirm_by <= cp.clock_now() and c.status = 'queued' and cp.unconfirmed_call(c)
        order by r.reservation_id
        limit p_limit
        for update of c skip locked
    loop
        perform cp.apply_call_result(v_call.call_id, jsonb_build_object('outcome', 'failed', 'reason', 'expired'));
        v_given_up := v_given_up + 1;
    end loop;
    for v_call in
        select c.* from cp.reservation r join cp.carrier_call c on c.call_id = r.release_call_id
        where r.status = 'releasing' and r.carrier_expires_at <= cp.clock_now() and c.status = 'queued'
          and cp.unconfirmed_call(c)
        order by r.reservation_id
        limit p_limit
        for update of c skip locked
    loop
        update cp.reservation set status = 'lapsed', settled_at = cp.clock_now()
        where release_call_id = v_call.call_id;
        perform cp.apply_call_result(v_call.call_id, jsonb_build_object('outcome', 'failed', 'reason', 'expired'));
        v_lapsed := v_lapsed + 1;
    end loop;
    with lapsed as (
        update cp.reservation r set status = 'lapsed', settled_at = cp.clock_now()
        where r.reservation_id in (select x.reservation_id from cp.reservation x
                                   where x.status = 'held' and x.carrier_expires_at <= cp.clock_now()
                                   order by x.reservation_id limit p_limit
                                   for update skip locked)
        returning 1
    )
    select v_lapsed + count(*) into v_lapsed from lapsed;
    return jsonb_build_object('given_up', v_given_up, 'lapsed', v_lapsed);
end
$$;
