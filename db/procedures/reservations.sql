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
    v_terms record;
    v_key text;
    v_earlier jsonb;
    v_carrier cp.carrier;
    v_product cp.product;
    v_pp cp.price_point;
    v_subscriber cp.subscriber;
    v_rules jsonb;
    v_optin cp.optin;
    v_proc cp.procedure;
    v_metadata jsonb;
begin
    v_terms := cp.camara_charge_terms(v_tx, p_default_product);
    v_key := cp.camara_request_key(v_merchant.merchant_id, v_tx);
    v_earlier := cp.idempotency_begin(v_merchant.merchant_id, v_key, 'prepare_payment', p_request);
    if v_earlier is not null then
        return v_earlier;
    end if;
    v_carrier := cp.carrier_for_msisdn(v_terms.o_msisdn);
    v_product := cp.merchant_product(v_merchant.merchant_id, v_terms.o_product);
    v_pp := cp.price_point_for(v_product.product_id, v_carrier.carrier_id, 'one_time', v_terms.o_amount_minor);
    if v_pp.currency <> v_carrier.currency then
        perform cp.fail('CP008', format('price point in %s but carrier %s bills in %s',
                                        v_pp.currency, v_carrier.code, v_carrier.currency));
    end if;
    v_subscriber := cp.lock_subscriber(v_terms.o_msisdn, v_carrier.carrier_id);
    v_rules := cp.effective_rules(v_carrier.carrier_id);
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
        || case when v_optin.optin_id is null then '{}'::jsonb
                else jsonb_build_object('validationInfo', jsonb_build_object(
                         'action', 'validate', 'authorizationId', v_optin.optin_id::text)) end);
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
    v_answer jsonb;
begin
    if v_step = 'cancelled' then
        perform cp.fail('CP125', format('payment %s has been cancelled', v_proc.procedure_id));
    elsif v_step <> 'pending_validation' then
        perform cp.fail('CP123', format('payment %s is already validated', v_proc.procedure_id));
    end if;
    if (p_request->>'authorizationId') is distinct from (v_proc.metadata->'camara'->>'optin_id') then
        perform cp.fail('CP122', 'invalid authorizationId');
    end if;
    v_answer := api.confirm_optin(p_merchant, (v_proc.metadata->'camara'->>'optin_id')::bigint, p_request->>'code');
    if v_answer->>'status' <> 'confirmed' then
        perform cp.fail(coalesce(v_answer->'error'->>'code', 'CP031'),
                        format('invalid code (%s attempts left)', coalesce(v_answer->>'attempts_left', '0')));
    end if;
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
    perform cp.queue_call(v_proc.procedure_id, 'charge', cp.charge_params(v_proc, v_proc.amount_minor));
    return cp.camara_payment(p) from cp.procedure p where p.procedure_id = v_proc.procedure_id;
end
$$;

-- CAMARA cancelPayment: the prepared charge fails, reason cancelled; no carrier call was ever queued.
create or replace function api.cancel_payment(p_merchant text, p_payment_id text, p_request jsonb default '{}')
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_proc cp.procedure := cp.prepared_charge(v_merchant.merchant_id, p_payment_id);
begin
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
-- subscriber, so the request must).
create or replace function cp.check_prepared_step(p_proc cp.procedure, p_request jsonb) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    if p_proc.metadata->'camara'->>'step' = 'confirmed' then
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
