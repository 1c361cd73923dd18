-- Procedures (a charge, a refund, an SMS, a balance check…): creating one and its public document.

-- Create a procedure row (status pending) and return it.
create or replace function cp.new_procedure(p_kind cp.procedure_kind, p_subscriber cp.subscriber,
                                            p_merchant_id integer, p_amount bigint, p_currency text,
                                            p_product_id integer default null, p_price_point_id integer default null,
                                            p_variant text default null, p_subscription_id bigint default null,
                                            p_period_index integer default null, p_parent_id bigint default null,
                                            p_metadata jsonb default '{}')
returns cp.procedure
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_proc cp.procedure;
begin
    insert into cp.procedure (kind, merchant_id, subscriber_id, carrier_id, product_id, price_point_id,
                              subscription_id, parent_id, period_index, amount_minor, currency, variant,
                              metadata, created_at, updated_at, holds_period)
    values (p_kind, p_merchant_id, p_subscriber.subscriber_id, p_subscriber.carrier_id, p_product_id,
            p_price_point_id, p_subscription_id, p_parent_id, p_period_index, p_amount, p_currency, p_variant,
            coalesce(p_metadata, '{}'), cp.clock_now(), cp.clock_now(),
            -- a subscription's charge takes its period (one per period: procedure_holds_period), unless
            -- it is a part of an accumulating period
            case when p_kind = 'charge' and p_subscription_id is not null and p_metadata->>'partial' is null
                 then true end)
    returning * into v_proc;
    return v_proc;
end
$$;

-- Parameters of a charge call for a procedure (amount may differ from the procedure's on step-down).
-- Over SMPP the charge is a premium MT, so it carries the text the subscriber receives.
create or replace function cp.charge_params(p_proc cp.procedure, p_amount bigint) returns jsonb
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select jsonb_build_object(
        'msisdn', s.msisdn, 'amount_minor', p_amount, 'currency', p_proc.currency,
        'description', coalesce(pr.name, 'purchase'), 'product_code', pr.code, 'merchant_code', m.code,
        'variant', p_proc.variant)
        || case when c.spec->>'transport' = 'smpp' then jsonb_build_object('text', cp.sms_text('premium_mt',
               s.subscriber_id, jsonb_build_object('product', coalesce(pr.name, 'purchase'), 'merchant', m.name,
                                                   'price', cp.format_money(p_amount, p_proc.currency))))
           else '{}'::jsonb end
    from cp.subscriber s
    join cp.carrier c on c.carrier_id = p_proc.carrier_id
    left join cp.product pr on pr.product_id = p_proc.product_id
    left join cp.merchant m on m.merchant_id = p_proc.merchant_id
    where s.subscriber_id = p_proc.subscriber_id
$$;

-- The public view of a procedure, as api.* functions return it.
create or replace function cp.procedure_document(p_proc cp.procedure) returns jsonb
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select jsonb_strip_nulls(jsonb_build_object(
        'id', p_proc.procedure_id, 'kind', p_proc.kind, 'status', p_proc.status,
        'amount_minor', p_proc.amount_minor, 'currency', p_proc.currency,
        'collected_minor', p_proc.collected_minor, 'refunded_minor', p_proc.refunded_minor,
        'variant', p_proc.variant, 'reason', p_proc.reason, 'subscription_id', p_proc.subscription_id,
        'payment_id', p_proc.parent_id, 'msisdn', (select msisdn from cp.subscriber where subscriber_id = p_proc.subscriber_id),
        'carrier', (select code from cp.carrier where carrier_id = p_proc.carrier_id),
        'product', (select code from cp.product where product_id = p_proc.product_id),
        'result', nullif(p_proc.result, '{}'::jsonb),
        'created_at', p_proc.created_at, 'final_at', p_proc.final_at))
$$;
