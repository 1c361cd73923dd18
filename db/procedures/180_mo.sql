-- Purchases by SMS (docs/smpp.md, "SMS journeys"): BUY <KEYWORD> texted to a carrier short code, over
-- SMPP or forwarded by an HTTP carrier (the spec's `mo` section); adapter.record_mo (170_sms.sql) routes it here.

-- BUY <KEYWORD>: a one-time purchase of the keyword's product at its one-time price, charged like
-- api.charge (same caps and charging hours). The MO is the subscriber's own request, kept as consent;
-- where the regulation wants a confirmed opt-in per one-time purchase, an SMS alone is not enough and the
-- subscriber is told so. Never raises for a rule: the refusal is the reply.
create or replace function cp.mo_buy(p_carrier cp.carrier, p_subscriber cp.subscriber, p_short_code text,
                                     p_keyword cp.sms_keyword, p_mo_id bigint, p_text text)
returns jsonb
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_product cp.product;
    v_pp cp.price_point;
    v_rules jsonb := cp.effective_rules(p_carrier.carrier_id);
    v_proc cp.procedure;
begin
    select * into v_product from cp.product where product_id = p_keyword.product_id;
    begin
        if coalesce((v_rules->>'optin_one_time')::boolean, false) then
            perform cp.fail('CP140', format('a purchase on %s needs a confirmed opt-in; buy on the merchant''s page',
                                            p_carrier.name));
        end if;
        v_pp := cp.price_point_for(v_product.product_id, p_carrier.carrier_id, 'one_time', null);
        perform cp.check_charge_rules(p_subscriber.subscriber_id, p_carrier.carrier_id, v_pp.amount_minor,
                                      v_pp.currency, v_rules);
        insert into cp.consent (subscriber_id, merchant_id, product_id, method, evidence, given_at)
        values (p_subscriber.subscriber_id, p_keyword.merchant_id, v_product.product_id, 'mo',
                jsonb_build_object('mo_id', p_mo_id, 'text', p_text, 'short_code', p_short_code,
                                   'purchase', v_pp.variant), cp.clock_now());
        v_proc := cp.new_procedure('charge', p_subscriber, p_keyword.merchant_id, v_pp.amount_minor, v_pp.currency,
                                   v_product.product_id, v_pp.price_point_id, v_pp.variant,
                                   p_metadata => jsonb_build_object('channel', 'sms', 'mo_id', p_mo_id,
                                                                    'keyword', p_keyword.keyword));
        perform cp.queue_call(v_proc.procedure_id, 'charge', cp.charge_params(v_proc, v_pp.amount_minor));
    exception when others then
        if left(sqlstate, 2) <> 'CP' then
            raise;
        end if;
        return cp.refuse_mo('sms_buy_refused', p_keyword, p_subscriber.subscriber_id, p_short_code, sqlstate, sqlerrm);
    end;
    return jsonb_build_object('status', 'purchase_queued', 'payment_id', v_proc.procedure_id);
end
$$;
