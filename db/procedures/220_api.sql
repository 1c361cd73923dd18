-- The merchant-facing SQL API (docs/sql-api.md). Every function takes the merchant code first, checks
-- the calling role may act for it, and returns a jsonb document with at least id and status.
-- Calls with an effect carry an idempotency key: a repeat returns the first result unchanged.

-- What a one-time purchase of a merchant's product by a number costs and who pays, checked in the
-- order every purchase checks it (number, carrier, product, amount, price point, currency), with the
-- subscriber locked and the carrier's rules. Shared by api.charge and api.prepare_payment, which
-- differ only in what they do with it.
create or replace function cp.one_time_purchase(p_merchant_id integer, p_msisdn text, p_product text,
                                                p_amount_minor bigint,
                                                out o_carrier cp.carrier, out o_product cp.product,
                                                out o_pp cp.price_point, out o_subscriber cp.subscriber,
                                                out o_rules jsonb)
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_msisdn text := cp.normalize_msisdn(p_msisdn);
begin
    o_carrier := cp.carrier_for_msisdn(v_msisdn);
    o_product := cp.merchant_product(p_merchant_id, p_product);
    if p_amount_minor is not null and p_amount_minor <= 0 then
        perform cp.fail('CP006', format('amount %s must be a positive number of minor units', p_amount_minor));
    end if;
    o_pp := cp.price_point_for(o_product.product_id, o_carrier.carrier_id, 'one_time', p_amount_minor);
    if o_pp.currency <> o_carrier.currency then
        perform cp.fail('CP008', format('price point in %s but carrier %s bills in %s',
                                        o_pp.currency, o_carrier.code, o_carrier.currency));
    end if;
    o_subscriber := cp.lock_subscriber(v_msisdn, o_carrier.carrier_id);
    o_rules := cp.effective_rules(o_carrier.carrier_id);
end
$$;

-- One-time purchase: validate, apply the regulation, queue the carrier charge.
create or replace function api.charge(p_merchant text, p_msisdn text, p_product text, p_idempotency_key text,
                                      p_amount_minor bigint default null, p_metadata jsonb default '{}')
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_purchase record;
    v_carrier cp.carrier;
    v_subscriber cp.subscriber;
    v_product cp.product;
    v_pp cp.price_point;
    v_rules jsonb;
    v_optin cp.optin;
    v_proc cp.procedure;
    v_metadata jsonb := cp.check_metadata(p_metadata);
    v_optin_id bigint := cp.json_bigint(v_metadata, 'optin_id');  -- the one member we read ourselves
    v_earlier jsonb;
begin
    v_earlier := cp.idempotency_begin(v_merchant.merchant_id, p_idempotency_key, 'charge',
        jsonb_build_object('msisdn', p_msisdn, 'product', p_product, 'amount', p_amount_minor, 'metadata', v_metadata));
    if v_earlier is not null then
        return v_earlier;
    end if;
    v_purchase := cp.one_time_purchase(v_merchant.merchant_id, p_msisdn, p_product, p_amount_minor);
    v_carrier := v_purchase.o_carrier;
    v_product := v_purchase.o_product;
    v_pp := v_purchase.o_pp;
    v_subscriber := v_purchase.o_subscriber;
    v_rules := v_purchase.o_rules;
    if coalesce((v_rules->>'optin_one_time')::boolean, false) then
        -- The regulation wants a confirmed opt-in (api.request_optin + api.confirm_optin) per purchase.
        select * into v_optin from cp.optin
        where optin_id = v_optin_id and merchant_id = v_merchant.merchant_id
          and subscriber_id = v_subscriber.subscriber_id and product_id = v_product.product_id
          and purpose = 'charge' and status = 'confirmed'
        for update;
        if not found then
            perform cp.fail('CP024', format('carrier %s requires a confirmed opt-in for this purchase '
                                            '(pass its optin_id in p_metadata)', v_carrier.code));
        end if;
        update cp.optin set status = 'used' where optin_id = v_optin.optin_id;
    end if;
    perform cp.check_charge_rules(v_subscriber.subscriber_id, v_carrier.carrier_id, v_pp.amount_minor, v_pp.currency,
                                  v_rules);
    v_proc := cp.new_procedure('charge', v_subscriber, v_merchant.merchant_id, v_pp.amount_minor, v_pp.currency,
                               v_product.product_id, v_pp.price_point_id, v_pp.variant, p_metadata => v_metadata);
    perform cp.queue_purchase(v_proc, v_pp.amount_minor);  -- the charge, or a number lookup first (070_routing.sql)
    return cp.idempotency_finish(v_merchant.merchant_id, p_idempotency_key, cp.procedure_document(v_proc));
end
$$;

-- Create an opt-in: a PIN sent by SMS, to be confirmed with api.confirm_optin. Every PIN is an SMS
-- to someone and a chance to guess, so none is sent while the number is locked for wrong PINs
-- (CP037) or has had its PINs for now (CP035), or the merchant has used its hourly budget on the
-- carrier (CP036). The caller holds the subscriber row locked (cp.lock_subscriber), so a number's
-- requests and checks are counted one at a time. The opt-in's checks get a sequence of their own.
create or replace function cp.create_optin(p_merchant cp.merchant, p_subscriber cp.subscriber, p_product cp.product,
                                           p_purpose text, p_subscription_id bigint)
returns cp.optin
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_rules jsonb := cp.effective_rules(p_subscriber.carrier_id);
    v_length integer := least(greatest(coalesce((v_rules->>'pin_length')::int, 6), 4), 10);
    -- 63 random bits modulo 10^length: uniform to within 10^-9.
    v_pin text := lpad(((('x' || encode(public.gen_random_bytes(8), 'hex'))::bit(64)::bigint & 9223372036854775807)
                        % power(10::numeric, v_length)::bigint)::text, v_length, '0');
    v_vars jsonb := jsonb_build_object('merchant', p_merchant.name, 'product', p_product.name,
                                       'purpose', case p_purpose when 'subscribe' then 'subscription' else 'purchase' end);
    v_wait timestamptz;
    v_sms bigint;
    v_optin cp.optin;
begin
    v_wait := cp.msisdn_pin_lock(p_subscriber.subscriber_id, v_rules);
    if v_wait is not null then
        perform cp.fail('CP037', format('too many wrong PINs for this number; PIN opt-ins resume at %s', v_wait));
    end if;
    v_wait := cp.msisdn_pin_request_wait(p_subscriber.subscriber_id, v_rules);
    if v_wait is not null then
        perform cp.fail('CP035', format('this number was sent its %s PINs of the hour or %s of the day; next one at %s',
                                        v_rules->>'pin_requests_per_msisdn_hour', v_rules->>'pin_requests_per_msisdn_day',
                                        v_wait));
    end if;
    v_wait := cp.merchant_pin_request_wait(p_merchant.merchant_id, p_subscriber.carrier_id, v_rules);
    if v_wait is not null then
        perform cp.fail('CP036', format('merchant %s has sent its %s PINs of the hour on this carrier; next one at %s',
                                        p_merchant.code, v_rules->>'pin_requests_per_merchant_hour', v_wait));
    end if;
    v_sms := cp.queue_sms(p_subscriber.subscriber_id,
                          cp.sms_text('pin', p_subscriber.subscriber_id, v_vars || jsonb_build_object('pin', v_pin)),
                          'pin', p_merchant.merchant_id, p_sensitive => true,
                          p_redacted_text => cp.sms_text('pin', p_subscriber.subscriber_id,
                                                         v_vars || jsonb_build_object('pin', repeat('*', v_length))));
    insert into cp.optin (merchant_id, subscriber_id, carrier_id, product_id, subscription_id, purpose, pin_hash,
                          max_attempts, expires_at, created_at, sms_procedure_id)
    values (p_merchant.merchant_id, p_subscriber.subscriber_id, p_subscriber.carrier_id, p_product.product_id,
            p_subscription_id, p_purpose, public.crypt(v_pin, public.gen_salt('bf', 4)),
            (v_rules->>'pin_max_attempts')::int,
            cp.clock_now() + make_interval(mins => (v_rules->>'pin_ttl_minutes')::int), cp.clock_now(), v_sms)
    returning * into v_optin;
    execute format('create sequence %s as integer minvalue 1', cp.pin_checks_sequence(v_optin.optin_id));
    return v_optin;
end
$$;

-- Ask for an opt-in before a one-time purchase (where the regulation requires one): sends a PIN.
create or replace function api.request_optin(p_merchant text, p_msisdn text, p_product text, p_idempotency_key text)
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_msisdn text;
    v_carrier cp.carrier;
    v_subscriber cp.subscriber;
    v_product cp.product;
    v_optin cp.optin;
    v_earlier jsonb;
begin
    v_earlier := cp.idempotency_begin(v_merchant.merchant_id, p_idempotency_key, 'request_optin',
        jsonb_build_object('msisdn', p_msisdn, 'product', p_product));
    if v_earlier is not null then
        return v_earlier;
    end if;
    v_msisdn := cp.normalize_msisdn(p_msisdn);
    v_carrier := cp.carrier_for_msisdn(v_msisdn);
    v_product := cp.merchant_product(v_merchant.merchant_id, p_product);
    v_subscriber := cp.lock_subscriber(v_msisdn, v_carrier.carrier_id);
    v_optin := cp.create_optin(v_merchant, v_subscriber, v_product, 'charge', null);
    return cp.idempotency_finish(v_merchant.merchant_id, p_idempotency_key,
        jsonb_build_object('id', v_optin.optin_id, 'status', 'pending', 'expires_at', v_optin.expires_at));
end
$$;

-- Create a subscription in pending_optin: the plan's full price on the subscriber's carrier
-- (cp.price_point_for), checked against the spend rules. Shared by api.subscribe and SUB keywords by SMS.
create or replace function cp.new_subscription(p_merchant_id integer, p_subscriber cp.subscriber,
                                               p_carrier cp.carrier, p_product cp.product, p_plan text)
returns cp.subscription
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_pp cp.price_point;
    v_sub cp.subscription;
begin
    v_pp := cp.price_point_for(p_product.product_id, p_carrier.carrier_id, p_plan::cp.plan);
    perform cp.check_charge_rules(p_subscriber.subscriber_id, p_carrier.carrier_id, v_pp.amount_minor, v_pp.currency);
    insert into cp.subscription (merchant_id, subscriber_id, carrier_id, product_id, plan, status, price_point_id,
                                 status_since, created_at)
    values (p_merchant_id, p_subscriber.subscriber_id, p_carrier.carrier_id, p_product.product_id,
            p_plan::cp.plan, 'pending_optin', v_pp.price_point_id, cp.clock_now(), cp.clock_now())
    returning * into v_sub;
    return v_sub;
end
$$;

-- The subscriber's live (not cancelled) subscription to a product, locked, or null: there is at most
-- one (index subscription_one_live). One still waiting for an opt-in that can no longer be given (its
-- PIN expired or used up its tries, its YES window closed) is cancelled here, so that asking again
-- starts afresh instead of finding a subscription nobody can confirm.
create or replace function cp.live_subscription(p_subscriber_id bigint, p_product_id integer)
returns cp.subscription
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_sub cp.subscription;
begin
    select * into v_sub from cp.subscription
    where subscriber_id = p_subscriber_id and product_id = p_product_id and status <> 'cancelled'
    for update;
    if not found or v_sub.status <> 'pending_optin'
       or exists (select 1 from cp.optin o
                  where o.subscriber_id = p_subscriber_id and o.subscription_id = v_sub.subscription_id
                    and o.status = 'pending' and o.expires_at > cp.clock_now() and o.attempts < o.max_attempts)
       or exists (select 1 from cp.sms_confirmation c
                  where c.subscription_id = v_sub.subscription_id and c.status = 'pending'
                    and c.expires_at > cp.clock_now()) then
        return v_sub;
    end if;
    update cp.optin set status = 'expired'
    where subscriber_id = p_subscriber_id and subscription_id = v_sub.subscription_id and status = 'pending';
    update cp.sms_confirmation set status = 'expired' where subscription_id = v_sub.subscription_id and status = 'pending';
    perform cp.cancel_subscription(v_sub.subscription_id, 'optin_expired');
    return null;
end
$$;

-- Subscribe: double opt-in where the regulation needs it, else activate and queue the first charge.
-- A subscriber has at most one live subscription to a product: asking again (with another key, or by
-- SMS keyword) returns that one, flagged "existing", and creates and charges nothing.
create or replace function api.subscribe(p_merchant text, p_msisdn text, p_product text, p_plan text,
                                         p_idempotency_key text, p_timezone text default null,
                                         p_language text default null)
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_msisdn text;
    v_carrier cp.carrier;
    v_subscriber cp.subscriber;
    v_product cp.product;
    v_sub cp.subscription;
    v_optin cp.optin;
    v_earlier jsonb;
begin
    v_earlier := cp.idempotency_begin(v_merchant.merchant_id, p_idempotency_key, 'subscribe',
        jsonb_build_object('msisdn', p_msisdn, 'product', p_product, 'plan', p_plan)
        || jsonb_strip_nulls(jsonb_build_object('timezone', p_timezone, 'language', p_language)));
    if v_earlier is not null then
        return v_earlier;
    end if;
    if p_plan is null or p_plan not in ('daily', 'weekly', 'monthly') then
        perform cp.fail('CP052', format('plan %L must be daily, weekly or monthly', left(p_plan, 64)));
    end if;
    v_msisdn := cp.normalize_msisdn(p_msisdn);
    v_carrier := cp.carrier_for_msisdn(v_msisdn);
    v_product := cp.merchant_product(v_merchant.merchant_id, p_product);
    -- The subscriber's row lock serialises every path that subscribes this number, so a concurrent
    -- request waits here and then finds the subscription this one made.
    v_subscriber := cp.lock_subscriber(v_msisdn, v_carrier.carrier_id);
    -- Before anything is scheduled or texted: periods are anchored, and texts written, in these.
    if p_timezone is not null or p_language is not null then
        v_subscriber := cp.set_subscriber_preferences(v_subscriber.subscriber_id, p_timezone, p_language);
    end if;
    v_sub := cp.live_subscription(v_subscriber.subscriber_id, v_product.product_id);
    if v_sub.subscription_id is not null then
        -- Still waiting for its PIN: the merchant may confirm the opt-in already sent.
        select * into v_optin from cp.optin
        where subscriber_id = v_subscriber.subscriber_id and subscription_id = v_sub.subscription_id
          and status = 'pending' and expires_at > cp.clock_now() and attempts < max_attempts
        order by optin_id desc limit 1;
        return cp.idempotency_finish(v_merchant.merchant_id, p_idempotency_key,
            cp.subscription_document(v_sub.subscription_id) || jsonb_build_object('existing', true)
            || jsonb_strip_nulls(jsonb_build_object('optin_id', v_optin.optin_id,
                                                    'optin_expires_at', v_optin.expires_at)));
    end if;
    v_sub := cp.new_subscription(v_merchant.merchant_id, v_subscriber, v_carrier, v_product, p_plan);
    if coalesce((cp.effective_rules(v_carrier.carrier_id)->>'optin_subscription')::boolean, false) then
        v_optin := cp.create_optin(v_merchant, v_subscriber, v_product, 'subscribe', v_sub.subscription_id);
    else
        perform cp.activate_subscription(v_sub.subscription_id);
        select * into v_sub from cp.subscription where subscription_id = v_sub.subscription_id;
    end if;
    return cp.idempotency_finish(v_merchant.merchant_id, p_idempotency_key,
        cp.subscription_document(v_sub.subscription_id) || jsonb_build_object('existing', false)
        || jsonb_strip_nulls(jsonb_build_object('optin_id', v_optin.optin_id, 'optin_expires_at', v_optin.expires_at)));
end
$$;

-- Confirm an opt-in with the PIN the subscriber received. A wrong PIN is not an exception (the
-- attempt must be counted): it returns status pin_wrong with error CP031 and the attempts left.
-- A caller can still roll its own transaction back, so every check is first counted by the
-- opt-in's sequence, which a rollback does not undo, and limits read those counts. A PIN is checked
-- only once its SMS was handed to an adapter (CP039): the opt-in is then committed, and so is its
-- sequence. A number locked for wrong PINs (CP037) or a merchant over its daily budget of wrong
-- PINs (CP038) gets no check at all.
create or replace function api.confirm_optin(p_merchant text, p_optin_id bigint, p_pin text) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_optin cp.optin;
    v_rules jsonb;
    v_checks integer;
    v_lock timestamptz;
begin
    select * into v_optin from cp.optin where optin_id = p_optin_id and merchant_id = v_merchant.merchant_id;
    if not found then
        perform cp.fail('CP030', format('no opt-in %s for merchant %L', p_optin_id, left(p_merchant, 40)));
    end if;
    -- A number's checks one at a time, and after its PIN requests, so its limits count exactly.
    perform 1 from cp.subscriber where subscriber_id = v_optin.subscriber_id for no key update;
    select * into v_optin from cp.optin where optin_id = p_optin_id for update;
    if v_optin.status in ('confirmed', 'used') then
        if v_optin.pin_hash = public.crypt(coalesce(p_pin, ''), v_optin.pin_hash) then
            -- Confirming twice with the right PIN is a repeat, not an error.
            return jsonb_strip_nulls(jsonb_build_object('id', v_optin.optin_id, 'status', 'confirmed',
                                                        'subscription_id', v_optin.subscription_id));
        end if;
        perform cp.fail('CP034', format('opt-in %s is already confirmed', p_optin_id));
    end if;
    v_checks := cp.optin_checks(v_optin);
    if v_optin.status = 'failed' or greatest(v_optin.attempts, v_checks) >= v_optin.max_attempts then
        perform cp.fail('CP033', format('opt-in %s: too many wrong PINs; start again', p_optin_id));
    end if;
    if v_optin.status = 'expired' or v_optin.expires_at <= cp.clock_now() or v_optin.pin_checks is not null then
        perform cp.fail('CP032', format('opt-in %s expired at %s; start again', p_optin_id, v_optin.expires_at));
    end if;
    if exists (select 1 from cp.subscription
               where subscription_id = v_optin.subscription_id and status = 'cancelled') then
        perform cp.fail('CP051', format('subscription %s was cancelled before its opt-in was confirmed',
                                        v_optin.subscription_id));
    end if;
    if (select status from cp.procedure where procedure_id = v_optin.sms_procedure_id) = 'pending' then
        perform cp.fail('CP039', format('the PIN of opt-in %s has not been sent yet; try again in a moment',
                                        p_optin_id));
    end if;
    v_rules := cp.effective_rules(v_optin.carrier_id);
    v_lock := cp.msisdn_pin_lock(v_optin.subscriber_id, v_rules);
    if v_lock is not null then
        perform cp.fail('CP037', format('opt-in %s: too many wrong PINs for this number; checks resume at %s',
                                        p_optin_id, v_lock));
    end if;
    v_lock := cp.merchant_pin_lock(v_optin.merchant_id, v_optin.carrier_id, v_rules);
    if v_lock is not null then
        perform cp.fail('CP038', format('merchant %s: too many wrong PINs today on this carrier; checks resume at %s',
                                        v_merchant.code, v_lock));
    end if;
    -- Counted before it is compared.
    v_checks := nextval(cp.pin_checks_sequence(v_optin.optin_id)::regclass);
    if v_optin.pin_hash <> public.crypt(coalesce(p_pin, ''), v_optin.pin_hash) then
        -- Checks that were rolled back count as wrong PINs too.
        update cp.optin set attempts = v_checks,
               status = case when v_checks >= max_attempts then 'failed'::cp.optin_status else status end
        where optin_id = v_optin.optin_id returning * into v_optin;
        if v_optin.status = 'failed' and v_optin.subscription_id is not null then
            update cp.subscription set status = 'cancelled', cancel_reason = 'optin_failed', cancelled_at = cp.clock_now()
            where subscription_id = v_optin.subscription_id and status = 'pending_optin';
        end if;
        v_lock := cp.msisdn_pin_lock(v_optin.subscriber_id, v_rules);
        return jsonb_strip_nulls(jsonb_build_object(
            'id', v_optin.optin_id,
            'status', case when v_optin.status = 'failed' then 'failed' when v_lock is not null then 'locked'
                           else 'pin_wrong' end,
            'error', jsonb_build_object('code', case when v_lock is not null then 'CP037'
                                                     when v_optin.status = 'failed' then 'CP033' else 'CP031' end,
                                        'message', case when v_lock is not null
                                                        then 'wrong PIN; too many for this number'
                                                        else 'wrong PIN' end),
            'attempts_left', v_optin.max_attempts - v_checks,
            'locked_until', v_lock));
    end if;
    update cp.optin set status = 'confirmed', confirmed_at = cp.clock_now(), attempts = greatest(attempts, v_checks - 1)
    where optin_id = v_optin.optin_id;
    insert into cp.consent (subscriber_id, merchant_id, product_id, method, evidence, given_at)
    values (v_optin.subscriber_id, v_optin.merchant_id, v_optin.product_id, 'pin',
            jsonb_build_object('optin_id', v_optin.optin_id, 'purpose', v_optin.purpose), cp.clock_now());
    if v_optin.subscription_id is not null then
        perform cp.activate_subscription(v_optin.subscription_id);
    end if;
    return jsonb_strip_nulls(jsonb_build_object('id', v_optin.optin_id, 'status', 'confirmed',
                                                'subscription_id', v_optin.subscription_id));
end
$$;

-- The public view of a subscription.
create or replace function cp.subscription_document(p_subscription_id bigint) returns jsonb
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select jsonb_strip_nulls(jsonb_build_object(
        'id', s.subscription_id, 'status', s.status, 'plan', s.plan,
        'product', p.code, 'msisdn', sb.msisdn, 'next_charge_at', s.next_charge_at,
        'paid_through', s.paid_through, 'cancel_reason', s.cancel_reason, 'cancelled_at', s.cancelled_at,
        'created_at', s.created_at))
    from cp.subscription s join cp.product p using (product_id) join cp.subscriber sb using (subscriber_id)
    where s.subscription_id = p_subscription_id
$$;

-- Cancel a subscription now (whoever asks: the merchant, the subscriber by SMS STOP). A charge
-- already in flight may still succeed (and can be refunded); nothing renews afterwards.
create or replace function cp.cancel_subscription(p_subscription_id bigint, p_reason text) returns jsonb
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_sub cp.subscription;
begin
    select * into v_sub from cp.subscription where subscription_id = p_subscription_id for update;
    if v_sub.status = 'cancelled' then
        perform cp.fail('CP051', format('subscription %s is already cancelled', p_subscription_id));
    end if;
    update cp.subscription
    set status = 'cancelled', cancel_reason = p_reason, cancelled_at = cp.clock_now(), next_charge_at = null
    where subscription_id = v_sub.subscription_id;
    perform cp.notify_merchant(v_sub.merchant_id, 'subscription.cancelled',
                               cp.subscription_document(v_sub.subscription_id), p_subscription_id => v_sub.subscription_id);
    return cp.subscription_document(v_sub.subscription_id);
end
$$;

-- Cancel a subscription of the merchant now.
create or replace function api.cancel_subscription(p_merchant text, p_subscription_id bigint,
                                                   p_reason text default null)
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
begin
    perform cp.check_length('p_reason', p_reason, 500);
    perform cp.merchant_subscription(v_merchant.merchant_id, p_subscription_id::text);
    return cp.cancel_subscription(p_subscription_id, coalesce(p_reason, 'merchant'));
end
$$;

-- Refund all or part of a collected payment, through the carrier's refund operation.
create or replace function api.refund(p_merchant text, p_payment_id bigint, p_idempotency_key text,
                                      p_amount_minor bigint default null, p_reason text default null)
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_charge cp.procedure;
    v_subscriber cp.subscriber;
    v_refundable bigint;
    v_amount bigint;
    v_window integer;
    v_refund cp.procedure;
    v_call cp.carrier_call;
    v_earlier jsonb;
begin
    perform cp.check_length('p_reason', p_reason, 500);
    v_earlier := cp.idempotency_begin(v_merchant.merchant_id, p_idempotency_key, 'refund',
        jsonb_build_object('payment', p_payment_id, 'amount', p_amount_minor, 'reason', p_reason));
    if v_earlier is not null then
        return v_earlier;
    end if;
    select * into v_charge from cp.procedure
    where procedure_id = p_payment_id and merchant_id = v_merchant.merchant_id and kind = 'charge'
    for update;
    if not found then
        perform cp.fail('CP040', format('no payment %s for merchant %L', p_payment_id, p_merchant));
    end if;
    if v_charge.status not in ('succeeded', 'partially_refunded') then
        perform cp.fail('CP043', format('payment %s is %s: only collected payments can be refunded',
                                        p_payment_id, v_charge.status));
    end if;
    v_window := (cp.effective_rules(v_charge.carrier_id)->>'refund_window_days')::int;
    if v_charge.final_at + make_interval(days => v_window) < cp.clock_now() then
        perform cp.fail('CP042', format('payment %s is outside the %s-day refund window', p_payment_id, v_window));
    end if;
    -- Refunds already succeeded or still in progress count against what can be refunded.
    select v_charge.collected_minor - coalesce(sum(amount_minor), 0) into v_refundable
    from cp.procedure
    where parent_id = v_charge.procedure_id and kind = 'refund' and status <> 'failed';
    v_amount := coalesce(p_amount_minor, v_refundable);
    if v_amount <= 0 then
        perform cp.fail('CP006', format('refund amount %s must be positive', v_amount));
    end if;
    if v_amount > v_refundable then
        perform cp.fail('CP041', format('refund of %s exceeds the %s %s still refundable on payment %s',
                                        v_amount, v_refundable, v_charge.currency, p_payment_id));
    end if;
    select * into v_subscriber from cp.subscriber where subscriber_id = v_charge.subscriber_id;
    v_refund := cp.new_procedure('refund', v_subscriber, v_merchant.merchant_id, v_amount, v_charge.currency,
                                 v_charge.product_id, v_charge.price_point_id, v_charge.variant,
                                 v_charge.subscription_id, p_parent_id => v_charge.procedure_id,
                                 p_metadata => jsonb_strip_nulls(jsonb_build_object('reason', p_reason)));
    select * into v_call from cp.carrier_call
    where procedure_id = v_charge.procedure_id and operation = 'charge' and status = 'done'
    order by call_id desc limit 1;
    perform cp.queue_call(v_refund.procedure_id, 'refund',
        cp.charge_params(v_refund, v_amount) || jsonb_build_object(
            'original', jsonb_build_object('correlator', v_call.correlator, 'carrier_ref', v_call.carrier_ref,
                                           'amount_minor', v_charge.collected_minor)));
    return cp.idempotency_finish(v_merchant.merchant_id, p_idempotency_key, cp.procedure_document(v_refund));
end
$$;

-- Ask the carrier whether the subscriber's balance covers an amount; poll api.payment for the answer.
-- It queues a carrier call (which the carrier may bill or rate-limit), so a retried request must not
-- queue a second one: like every call with an effect it takes an idempotency key.
create or replace function api.check_balance(p_merchant text, p_msisdn text, p_amount_minor bigint,
                                             p_idempotency_key text)
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_msisdn text;
    v_carrier cp.carrier;
    v_subscriber cp.subscriber;
    v_proc cp.procedure;
    v_earlier jsonb;
begin
    v_earlier := cp.idempotency_begin(v_merchant.merchant_id, p_idempotency_key, 'check_balance',
        jsonb_build_object('msisdn', p_msisdn, 'amount', p_amount_minor));
    if v_earlier is not null then
        return v_earlier;
    end if;
    v_msisdn := cp.normalize_msisdn(p_msisdn);
    v_carrier := cp.carrier_for_msisdn(v_msisdn);
    if p_amount_minor is null or p_amount_minor <= 0 then
        perform cp.fail('CP006', format('amount %s must be a positive number of minor units', p_amount_minor));
    end if;
    v_subscriber := cp.lock_subscriber(v_msisdn, v_carrier.carrier_id);
    v_proc := cp.new_procedure('balance_check', v_subscriber, v_merchant.merchant_id, p_amount_minor,
                               v_carrier.currency);
    perform cp.queue_call(v_proc.procedure_id, 'balance',
                          jsonb_build_object('msisdn', v_msisdn, 'amount_minor', p_amount_minor,
                                             'currency', v_carrier.currency));
    return cp.idempotency_finish(v_merchant.merchant_id, p_idempotency_key, cp.procedure_document(v_proc));
end
$$;

-- A payment (any procedure of the merchant): status, amounts, carrier attempts and history.
create or replace function api.payment(p_merchant text, p_payment_id bigint) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_proc cp.procedure;
begin
    select * into v_proc from cp.procedure where procedure_id = p_payment_id and merchant_id = v_merchant.merchant_id;
    if not found then
        perform cp.fail('CP040', format('no payment %s for merchant %L', p_payment_id, p_merchant));
    end if;
    return cp.procedure_document(v_proc) || jsonb_build_object(
        'attempts', coalesce((select jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                        'attempt', c.attempt, 'operation', c.operation, 'status', c.status, 'outcome', c.outcome,
                        'reason', c.reason, 'carrier_code', c.carrier_code, 'created_at', c.created_at,
                        'finished_at', c.finished_at)) order by c.call_id)
                    from cp.carrier_call c where c.procedure_id = v_proc.procedure_id), '[]'::jsonb),
        'refunds', coalesce((select jsonb_agg(jsonb_build_object('id', r.procedure_id, 'status', r.status,
                                                                 'amount_minor', r.amount_minor) order by r.procedure_id)
                    from cp.procedure r where r.parent_id = v_proc.procedure_id), '[]'::jsonb),
        'history', cp.status_timeline('procedure', v_proc.procedure_id));
end
$$;

-- A subscription: status, dates and its charges.
create or replace function api.subscription(p_merchant text, p_subscription_id bigint) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
begin
    perform cp.merchant_subscription(v_merchant.merchant_id, p_subscription_id::text);
    return cp.subscription_document(p_subscription_id) || jsonb_build_object(
        'charges', coalesce((select jsonb_agg(jsonb_build_object('id', p.procedure_id, 'status', p.status,
                                                                 'amount_minor', p.amount_minor, 'period', p.period_index)
                                              order by p.procedure_id)
                    from cp.procedure p where p.subscription_id = p_subscription_id and p.kind = 'charge'), '[]'::jsonb),
        'history', cp.status_timeline('subscription', p_subscription_id));
end
$$;

-- A subscriber's own time zone and language, when the merchant knows them better than the carrier's
-- country does: renewals, charging hours, quiet hours and reminders follow the zone, texts use the
-- language wherever a template exists in it (else the country's, else English). Null leaves one as it is.
create or replace function cp.set_subscriber_preferences(p_subscriber_id bigint, p_timezone text, p_language text)
returns cp.subscriber
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_subscriber cp.subscriber;
begin
    if p_timezone is not null
       and not exists (select 1 from pg_catalog.pg_timezone_names z where z.name = p_timezone and z.name not like 'posix/%') then
        perform cp.fail('CP141', format('time zone %L is not an IANA zone name (e.g. Africa/Lagos)', left(p_timezone, 40)));
    end if;
    if p_language is not null and p_language !~ '^[a-z]{2,3}$' then
        perform cp.fail('CP142', format('language %L is not an ISO 639 code (two or three lower-case letters)',
                                        left(p_language, 20)));
    end if;
    update cp.subscriber
    set timezone = coalesce(p_timezone, timezone), language = coalesce(p_language, language)
    where subscriber_id = p_subscriber_id
    returning * into v_subscriber;
    return v_subscriber;
end
$$;

-- Set a customer's time zone and language (see cp.set_subscriber_preferences). Only a merchant the
-- subscriber has dealt with (a payment, a subscription or an opt-in) may: the setting is the
-- subscriber's, seen by every merchant.
create or replace function api.set_subscriber_preferences(p_merchant text, p_msisdn text,
                                                          p_timezone text default null,
                                                          p_language text default null)
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_msisdn text := cp.normalize_msisdn(p_msisdn);
    v_subscriber cp.subscriber;
begin
    select * into v_subscriber from cp.subscriber where msisdn = v_msisdn for no key update;
    if not found or not (exists (select 1 from cp.procedure p where p.subscriber_id = v_subscriber.subscriber_id
                                                                and p.merchant_id = v_merchant.merchant_id)
                         or exists (select 1 from cp.subscription s where s.subscriber_id = v_subscriber.subscriber_id
                                                                      and s.merchant_id = v_merchant.merchant_id)
                         or exists (select 1 from cp.optin o where o.subscriber_id = v_subscriber.subscriber_id
                                                               and o.merchant_id = v_merchant.merchant_id)) then
        perform cp.fail('CP143', format('no customer %s of merchant %L', cp.mask_msisdn(v_msisdn), left(p_merchant, 40)));
    end if;
    v_subscriber := cp.set_subscriber_preferences(v_subscriber.subscriber_id, p_timezone, p_language);
    return jsonb_build_object('msisdn', v_subscriber.msisdn,
                              'timezone', cp.subscriber_timezone(v_subscriber.subscriber_id),
                              'language', cp.subscriber_language(v_subscriber.subscriber_id));
end
$$;
