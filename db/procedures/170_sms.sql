-- SMS journeys (docs/smpp.md): keywords texted to a carrier short code, the YES reply of the double
-- opt-in, STOP and HELP, and the settling of premium MT charges by delivery receipt.
--
-- MO messages arrive through adapter.record_mo (one row per SMSC message id in cp.mo_inbox, so a
-- redelivered MO has no second effect). Subscriptions are created and cancelled by the same
-- functions as api.subscribe and api.cancel_subscription (cp.new_subscription,
-- cp.cancel_subscription); the first charge is queued by cp.activate_subscription, as after a PIN.
-- Replies go out through cp.queue_sms with purpose 'reply' (not held by quiet hours: the
-- subscriber just wrote to us), from the short code the MO was sent to.

-- Country languages for SMS texts (cp.country rows come from 060_regulation.sql, which runs first).
update cp.country set language = v.language
from (values ('DE', 'de'), ('FR', 'fr'), ('BR', 'pt')) v (country, language)
where cp.country.country = v.country and cp.country.language = 'en';

-- An MO text as a command: Unicode compatibility forms folded (full-width letters, non-breaking
-- spaces), ASCII punctuation and invisible characters dropped, spaces collapsed, upper case.
create or replace function cp.normalize_mo_text(p_text text) returns text
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select upper(btrim(regexp_replace(
        regexp_replace(normalize(coalesce(p_text, ''), nfkc), '[!-/:-@\[-`{-~]', ' ', 'g'),
        '[[:space:]\u200B\u200C\u200D\u2060\uFEFF]+', ' ', 'g')))
$$;

-- What an MO asks for: {"command": sub|buy|yes|stop|stop_all|help|unknown, "keyword": ...}.
-- A registered keyword alone counts as SUB <keyword>.
create or replace function cp.parse_mo(p_normalized text) returns jsonb
language plpgsql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_words text[] := case when p_normalized = '' then '{}'::text[] else string_to_array(p_normalized, ' ') end;
    v_first text := v_words[1];
    v_n integer := coalesce(array_length(v_words, 1), 0);
begin
    if v_n = 0 then
        return jsonb_build_object('command', 'unknown');
    end if;
    if v_first in ('STOP', 'UNSUB', 'UNSUBSCRIBE', 'CANCEL', 'QUIT', 'END', 'OPTOUT', 'STOPALL') then
        if v_first = 'STOPALL' or v_words[2] = 'ALL' then
            return jsonb_build_object('command', 'stop_all');
        end if;
        return jsonb_strip_nulls(jsonb_build_object('command', 'stop', 'keyword', v_words[2]));
    end if;
    if v_first in ('SUB', 'SUBSCRIBE', 'JOIN', 'START') and v_n >= 2 then
        return jsonb_build_object('command', 'sub', 'keyword', v_words[2]);
    end if;
    if v_first in ('BUY', 'PURCHASE') and v_n >= 2 then
        return jsonb_build_object('command', 'buy', 'keyword', v_words[2]);
    end if;
    if v_first in ('YES', 'Y', 'JA', 'YEBO') and v_n <= 2 then
        return jsonb_build_object('command', 'yes');
    end if;
    if v_first in ('HELP', 'INFO') then
        return jsonb_build_object('command', 'help');
    end if;
    if v_n = 1 then
        return jsonb_build_object('command', 'keyword', 'keyword', v_first);
    end if;
    return jsonb_build_object('command', 'unknown');
end
$$;

-- The price a keyword's subscription is offered at in texts (HELP, confirmations), the one
-- cp.new_subscription will charge; null when it has none, so a text can leave the keyword out.
create or replace function cp.keyword_price_point(p_keyword cp.sms_keyword) returns cp.price_point
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select l.price_point
    from cp.price_points_for(p_keyword.product_id, p_keyword.carrier_id, p_keyword.plan) l
    where l.level = 0
$$;

-- The placeholders of keyword texts: service, provider, cost, frequency, how to stop.
create or replace function cp.keyword_vars(p_keyword cp.sms_keyword, p_subscriber_id bigint,
                                           p_price_point_id integer default null)
returns jsonb
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_pp cp.price_point;
    v_rules jsonb := cp.effective_rules(p_keyword.carrier_id);
begin
    if p_price_point_id is not null then
        select * into v_pp from cp.price_point where price_point_id = p_price_point_id;
    else
        v_pp := cp.keyword_price_point(p_keyword);
    end if;
    return jsonb_build_object(
        'keyword', p_keyword.keyword, 'short_code', p_keyword.short_code,
        'merchant', (select name from cp.merchant where merchant_id = p_keyword.merchant_id),
        'product', (select name from cp.product where product_id = p_keyword.product_id),
        'price', case when v_pp.price_point_id is not null then cp.format_money(v_pp.amount_minor, v_pp.currency) end,
        'period', cp.sms_text('period_' || p_keyword.plan, p_subscriber_id),
        'frequency', cp.sms_text('freq_' || p_keyword.plan, p_subscriber_id),
        'minutes', coalesce((v_rules->>'sms_confirm_minutes')::int, (v_rules->>'pin_ttl_minutes')::int));
end
$$;

-- Queue a reply to an MO, from the short code it was sent to. Null when the carrier cannot send SMS.
create or replace function cp.queue_reply(p_subscriber_id bigint, p_text text, p_merchant_id integer,
                                          p_short_code text)
returns bigint
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_proc_id bigint;
begin
    if not exists (select 1 from cp.subscriber s join cp.carrier c using (carrier_id)
                   where s.subscriber_id = p_subscriber_id and c.spec->'operations' ? 'send_sms') then
        return null;
    end if;
    v_proc_id := cp.queue_sms(p_subscriber_id, p_text, 'reply', p_merchant_id);
    if p_short_code is not null then
        update cp.carrier_call set params = params || jsonb_build_object('short_code', p_short_code)
        where procedure_id = v_proc_id;
    end if;
    return v_proc_id;
end
$$;

-- A keyword's SUB or BUY that a rule refused (a CPnnn error: a cap, no price, an opt-in it needs): the
-- subscriber is told why by a reply (p_template), and the MO's result says so. Never raises: what a
-- subscriber texts gets an answer, not an error.
create or replace function cp.refuse_mo(p_template text, p_keyword cp.sms_keyword, p_subscriber_id bigint,
                                        p_short_code text, p_code text, p_message text)
returns jsonb
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    return jsonb_build_object('status', 'refused', 'error', jsonb_build_object('code', p_code, 'message', p_message),
                              'reply_id', cp.queue_reply(p_subscriber_id,
                                  cp.sms_text(p_template, p_subscriber_id, cp.keyword_vars(p_keyword, p_subscriber_id)
                                                                           || jsonb_build_object('reason', p_message)),
                                  p_keyword.merchant_id, p_short_code));
end
$$;

-- The HELP text: the services on this short code and how to stop.
create or replace function cp.sms_help_text(p_carrier_id integer, p_subscriber_id bigint, p_short_code text)
returns text
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select cp.sms_text('sms_help', p_subscriber_id, jsonb_build_object(
        'short_code', p_short_code,
        'services', coalesce(
            (select string_agg(format('SUB %s: %s from %s, %s/%s', k.keyword, p.name, m.name,
                                      cp.format_money(pp.amount_minor, pp.currency),
                                      cp.sms_text('period_' || k.plan, p_subscriber_id)), '; ' order by k.keyword)
             from cp.sms_keyword k
             join cp.product p on p.product_id = k.product_id
             join cp.merchant m on m.merchant_id = k.merchant_id
             cross join lateral cp.keyword_price_point(k) pp
             where k.carrier_id = p_carrier_id and k.short_code = p_short_code and k.active
               and pp.price_point_id is not null),
            'No services on ' || coalesce(p_short_code, 'this number'))))
$$;

-- SUB <KEYWORD>: a subscription in pending_optin and a confirmation request (double opt-in), or,
-- where the regulation asks for no second step, the MO itself is the consent.
create or replace function cp.mo_subscribe(p_carrier cp.carrier, p_subscriber cp.subscriber, p_short_code text,
                                           p_keyword cp.sms_keyword, p_mo_id bigint, p_text text)
returns jsonb
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant;
    v_product cp.product;
    v_sub cp.subscription;
    v_conf cp.sms_confirmation;
    v_rules jsonb := cp.effective_rules(p_carrier.carrier_id);
    v_minutes integer;
    v_reply bigint;
begin
    select * into v_merchant from cp.merchant where merchant_id = p_keyword.merchant_id;
    select * into v_product from cp.product where product_id = p_keyword.product_id;

    -- Already subscribed, or already asked: answer with the subscription there is (as api.subscribe
    -- does), never a second one. cp.live_subscription has cancelled one nobody can confirm any more.
    v_sub := cp.live_subscription(p_subscriber.subscriber_id, v_product.product_id);
    if v_sub.subscription_id is not null and v_sub.status <> 'pending_optin' then
        v_reply := cp.queue_reply(p_subscriber.subscriber_id,
            cp.sms_text('sms_already', p_subscriber.subscriber_id, cp.keyword_vars(p_keyword, p_subscriber.subscriber_id)),
            v_merchant.merchant_id, p_short_code);
        return jsonb_build_object('status', 'already_subscribed', 'subscription_id', v_sub.subscription_id,
                                  'existing', true, 'reply_id', v_reply);
    end if;
    if v_sub.subscription_id is not null then
        select * into v_conf from cp.sms_confirmation where subscription_id = v_sub.subscription_id for update;
        if found and v_conf.status = 'pending' and v_conf.expires_at > cp.clock_now() then
            v_reply := cp.queue_reply(p_subscriber.subscriber_id,
                cp.sms_text('sms_confirm', p_subscriber.subscriber_id,
                            cp.keyword_vars(p_keyword, p_subscriber.subscriber_id, v_sub.price_point_id)),
                v_merchant.merchant_id, p_short_code);
            return jsonb_build_object('status', 'confirmation_resent', 'subscription_id', v_sub.subscription_id,
                                      'existing', true, 'confirmation_id', v_conf.confirmation_id, 'reply_id', v_reply);
        end if;
        -- Waiting for a PIN the merchant sent: the subscriber, who asks by SMS, may confirm the same
        -- subscription with YES instead (whichever comes first activates it; the other changes nothing).
        v_minutes := coalesce((v_rules->>'sms_confirm_minutes')::int, (v_rules->>'pin_ttl_minutes')::int);
        insert into cp.sms_confirmation (subscription_id, subscriber_id, keyword_id, short_code, expires_at, created_at)
        values (v_sub.subscription_id, p_subscriber.subscriber_id, p_keyword.keyword_id, p_short_code,
                cp.clock_now() + make_interval(mins => v_minutes), cp.clock_now())
        on conflict (subscription_id) do update
            set status = 'pending', keyword_id = excluded.keyword_id, short_code = excluded.short_code,
                expires_at = excluded.expires_at, confirmed_at = null, created_at = excluded.created_at
        returning * into v_conf;
        v_reply := cp.queue_reply(p_subscriber.subscriber_id,
            cp.sms_text('sms_confirm', p_subscriber.subscriber_id,
                        cp.keyword_vars(p_keyword, p_subscriber.subscriber_id, v_sub.price_point_id)),
            v_merchant.merchant_id, p_short_code);
        return jsonb_build_object('status', 'confirmation_sent', 'subscription_id', v_sub.subscription_id,
                                  'existing', true, 'confirmation_id', v_conf.confirmation_id,
                                  'expires_at', v_conf.expires_at, 'reply_id', v_reply);
    end if;

    begin
        v_sub := cp.new_subscription(v_merchant.merchant_id, p_subscriber, p_carrier, v_product, p_keyword.plan::text);
    exception when others then
        if left(sqlstate, 2) <> 'CP' then
            raise;
        end if;
        -- A rule refused it (spend cap, no price): tell the subscriber, and keep the MO's record.
        return cp.refuse_mo('sms_refused', p_keyword, p_subscriber.subscriber_id, p_short_code, sqlstate, sqlerrm);
    end;

    if coalesce((v_rules->>'optin_subscription')::boolean, false) then
        v_minutes := coalesce((v_rules->>'sms_confirm_minutes')::int, (v_rules->>'pin_ttl_minutes')::int);
        insert into cp.sms_confirmation (subscription_id, subscriber_id, keyword_id, short_code, expires_at, created_at)
        values (v_sub.subscription_id, p_subscriber.subscriber_id, p_keyword.keyword_id, p_short_code,
                cp.clock_now() + make_interval(mins => v_minutes), cp.clock_now())
        returning * into v_conf;
        v_reply := cp.queue_reply(p_subscriber.subscriber_id,
            cp.sms_text('sms_confirm', p_subscriber.subscriber_id,
                        cp.keyword_vars(p_keyword, p_subscriber.subscriber_id, v_sub.price_point_id)),
            v_merchant.merchant_id, p_short_code);
        return jsonb_build_object('status', 'confirmation_sent', 'subscription_id', v_sub.subscription_id,
                                  'confirmation_id', v_conf.confirmation_id, 'expires_at', v_conf.expires_at,
                                  'reply_id', v_reply);
    end if;
    insert into cp.consent (subscriber_id, merchant_id, product_id, method, evidence, given_at)
    values (p_subscriber.subscriber_id, v_merchant.merchant_id, v_product.product_id, 'mo',
            jsonb_build_object('mo_id', p_mo_id, 'text', p_text, 'short_code', p_short_code,
                               'subscription_id', v_sub.subscription_id), cp.clock_now());
    perform cp.activate_subscription(v_sub.subscription_id);
    v_reply := cp.queue_reply(p_subscriber.subscriber_id,
        cp.sms_text('sms_welcome', p_subscriber.subscriber_id,
                    cp.keyword_vars(p_keyword, p_subscriber.subscriber_id, v_sub.price_point_id)),
        v_merchant.merchant_id, p_short_code);
    return jsonb_build_object('status', 'subscribed', 'subscription_id', v_sub.subscription_id, 'reply_id', v_reply);
end
$$;

-- A confirmation whose time ran out: expired, and its subscription cancelled if still waiting.
create or replace function cp.expire_sms_confirmation(p_conf cp.sms_confirmation) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    update cp.sms_confirmation set status = 'expired' where confirmation_id = p_conf.confirmation_id;
    if exists (select 1 from cp.subscription where subscription_id = p_conf.subscription_id and status = 'pending_optin')
    then
        perform cp.cancel_subscription(p_conf.subscription_id, 'optin_expired');
    end if;
end
$$;

-- YES: confirm the subscriber's latest pending request (preferring this short code's) while it is
-- inside the window; the consent is logged with method 'mo' and the first charge is queued.
create or replace function cp.mo_confirm(p_carrier cp.carrier, p_subscriber cp.subscriber, p_short_code text,
                                         p_mo_id bigint, p_text text)
returns jsonb
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_conf cp.sms_confirmation;
    v_keyword cp.sms_keyword;
    v_sub cp.subscription;
    v_vars jsonb;
    v_reply bigint;
begin
    select * into v_conf from cp.sms_confirmation
    where subscriber_id = p_subscriber.subscriber_id and status = 'pending'
    order by short_code = p_short_code desc, created_at desc, confirmation_id desc
    limit 1
    for update;
    if not found then
        v_reply := cp.queue_reply(p_subscriber.subscriber_id,
            cp.sms_text('sms_nothing_to_confirm', p_subscriber.subscriber_id), null, p_short_code);
        return jsonb_build_object('status', 'nothing_to_confirm', 'reply_id', v_reply);
    end if;
    select * into v_keyword from cp.sms_keyword where keyword_id = v_conf.keyword_id;
    select * into v_sub from cp.subscription where subscription_id = v_conf.subscription_id for update;
    v_vars := cp.keyword_vars(v_keyword, p_subscriber.subscriber_id, v_sub.price_point_id);
    if v_sub.status not in ('pending_optin', 'cancelled') then
        -- The merchant's PIN activated it first: the YES has nothing left to do.
        update cp.sms_confirmation set status = 'cancelled' where confirmation_id = v_conf.confirmation_id;
        v_reply := cp.queue_reply(p_subscriber.subscriber_id, cp.sms_text('sms_already', p_subscriber.subscriber_id,
                                                                          v_vars),
                                  v_keyword.merchant_id, v_conf.short_code);
        return jsonb_build_object('status', 'already_subscribed', 'subscription_id', v_conf.subscription_id,
                                  'existing', true, 'confirmation_id', v_conf.confirmation_id, 'reply_id', v_reply);
    end if;
    if v_conf.expires_at <= cp.clock_now() or v_sub.status <> 'pending_optin' then
        perform cp.expire_sms_confirmation(v_conf);
        v_reply := cp.queue_reply(p_subscriber.subscriber_id, cp.sms_text('sms_expired', p_subscriber.subscriber_id, v_vars),
                                  v_keyword.merchant_id, v_conf.short_code);
        return jsonb_build_object('status', 'expired', 'subscription_id', v_conf.subscription_id,
                                  'confirmation_id', v_conf.confirmation_id, 'reply_id', v_reply);
    end if;
    update cp.sms_confirmation set status = 'confirmed', confirmed_at = cp.clock_now()
    where confirmation_id = v_conf.confirmation_id;
    insert into cp.consent (subscriber_id, merchant_id, product_id, method, evidence, given_at)
    values (p_subscriber.subscriber_id, v_keyword.merchant_id, v_keyword.product_id, 'mo',
            jsonb_build_object('confirmation_id', v_conf.confirmation_id, 'subscription_id', v_conf.subscription_id,
                               'mo_id', p_mo_id, 'text', p_text, 'short_code', p_short_code,
                               'requested_at', v_conf.created_at), cp.clock_now());
    perform cp.activate_subscription(v_conf.subscription_id);
    v_reply := cp.queue_reply(p_subscriber.subscriber_id, cp.sms_text('sms_welcome', p_subscriber.subscriber_id, v_vars),
                              v_keyword.merchant_id, v_conf.short_code);
    return jsonb_build_object('status', 'confirmed', 'subscription_id', v_conf.subscription_id,
                              'confirmation_id', v_conf.confirmation_id, 'reply_id', v_reply);
end
$$;

-- STOP ALL (every subscription), STOP <KEYWORD> (that service), STOP (the most recent one):
-- cancelled at once, with a confirmation SMS. An unknown keyword after STOP still stops the most
-- recent subscription: a STOP must never be lost on a typo.
create or replace function cp.mo_stop(p_carrier cp.carrier, p_subscriber cp.subscriber, p_short_code text,
                                      p_mode text, p_keyword text)
returns jsonb
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_ids bigint[];
    v_id bigint;
    v_services text;
    v_merchant_id integer;
    v_reply bigint;
begin
    if p_mode = 'all' then
        select array_agg(subscription_id order by subscription_id) into v_ids from cp.subscription
        where subscriber_id = p_subscriber.subscriber_id and status <> 'cancelled';
    elsif p_keyword is not null then
        select array_agg(s.subscription_id order by s.subscription_id) into v_ids from cp.subscription s
        where s.subscriber_id = p_subscriber.subscriber_id and s.status <> 'cancelled'
          and s.product_id in (select k.product_id from cp.sms_keyword k
                               where k.carrier_id = p_carrier.carrier_id and k.keyword = p_keyword);
    end if;
    if v_ids is null and p_mode <> 'all' then
        select array[subscription_id] into v_ids from cp.subscription
        where subscriber_id = p_subscriber.subscriber_id and status <> 'cancelled'
        order by created_at desc, subscription_id desc limit 1;
    end if;
    if v_ids is null then
        v_reply := cp.queue_reply(p_subscriber.subscriber_id, cp.sms_text('sms_none_to_stop', p_subscriber.subscriber_id),
                                  null, p_short_code);
        return jsonb_build_object('status', 'nothing_to_stop', 'reply_id', v_reply);
    end if;
    foreach v_id in array v_ids loop
        perform cp.cancel_subscription(v_id, 'sms_stop');
        update cp.sms_confirmation set status = 'cancelled' where subscription_id = v_id and status = 'pending';
    end loop;
    select string_agg(p.name || ' (' || m.name || ')', ', ' order by s.subscription_id), min(s.merchant_id)
    into v_services, v_merchant_id
    from cp.subscription s join cp.product p using (product_id) join cp.merchant m on m.merchant_id = s.merchant_id
    where s.subscription_id = any (v_ids);
    v_reply := cp.queue_reply(p_subscriber.subscriber_id,
        cp.sms_text('sms_stopped', p_subscriber.subscriber_id, jsonb_build_object('services', v_services)),
        v_merchant_id, p_short_code);
    return jsonb_build_object('status', 'stopped', 'subscription_ids', to_jsonb(v_ids), 'reply_id', v_reply);
end
$$;

-- Record one MO message and act on it. Returns {id, command, status, ...}: status says what was
-- done (confirmation_sent, confirmed, expired, stopped, help, not_understood, ...). Idempotent per
-- (carrier, carrier_msg_id): a redelivered MO returns status 'duplicate' and the first result.
-- Never raises for anything a subscriber can type.
-- p_mo: {"msisdn", "short_code", "text", "carrier_msg_id", "received_at", ...} as the SMPP connector reports it.
create or replace function adapter.record_mo(p_carrier text, p_mo jsonb) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_carrier cp.carrier;
    v_subscriber cp.subscriber;
    v_msisdn text;
    v_text text := coalesce(p_mo->>'text', '');
    v_norm text := cp.normalize_mo_text(p_mo->>'text');
    v_parsed jsonb := cp.parse_mo(v_norm);
    v_command text := v_parsed->>'command';
    v_short_code text := nullif(p_mo->>'short_code', '');
    v_msg_id text;
    v_mo_id bigint;
    v_keyword cp.sms_keyword;
    v_result jsonb;
    v_received timestamptz;
begin
    v_carrier := cp.named_carrier(p_carrier);
    v_msg_id := coalesce(nullif(p_mo->>'carrier_msg_id', ''),
                         'h:' || md5(concat_ws('|', p_mo->>'msisdn', v_short_code, v_text, p_mo->>'received_at')));
    begin
        v_msisdn := cp.normalize_msisdn(p_mo->>'msisdn');
    exception when sqlstate 'CP005' then
        v_msisdn := null;
        v_command := 'invalid_sender';
    end;
    begin
        v_received := coalesce((p_mo->>'received_at')::timestamptz, cp.clock_now());
    exception when others then
        v_received := cp.clock_now();
    end;
    -- The keyword a SUB, a BUY or a bare word names, looked up here once for all of them.
    if v_command in ('keyword', 'sub', 'buy') then
        select * into v_keyword from cp.sms_keyword
        where carrier_id = v_carrier.carrier_id and short_code = v_short_code and keyword = v_parsed->>'keyword'
          and active;
    end if;
    if v_command = 'keyword' then
        -- A bare word is SUB <word> when it is a keyword here, otherwise not understood.
        v_command := case when v_keyword.keyword_id is not null then 'sub' else 'unknown' end;
    end if;
    insert into cp.mo_inbox (carrier_id, carrier_msg_id, msisdn, short_code, text, normalized, command, received_at)
    values (v_carrier.carrier_id, v_msg_id, coalesce(v_msisdn, coalesce(p_mo->>'msisdn', '')), v_short_code, v_text,
            v_norm, v_command, v_received)
    on conflict (carrier_id, carrier_msg_id) do nothing
    returning mo_id into v_mo_id;
    if v_mo_id is null then
        select jsonb_build_object('id', mo_id, 'status', 'duplicate', 'command', command, 'result', result)
        into v_result from cp.mo_inbox where carrier_id = v_carrier.carrier_id and carrier_msg_id = v_msg_id;
        return v_result;
    end if;
    if v_msisdn is null then
        update cp.mo_inbox set result = '{"status": "ignored"}' where mo_id = v_mo_id;
        return jsonb_build_object('id', v_mo_id, 'status', 'ignored', 'command', v_command);
    end if;
    v_subscriber := cp.lock_subscriber(v_msisdn, v_carrier.carrier_id);
    v_result := case
        when v_command in ('sub', 'buy') and v_keyword.keyword_id is null then jsonb_build_object(
            'status', 'unknown_keyword', 'reply_id', cp.queue_reply(v_subscriber.subscriber_id,
                cp.sms_text('sms_unknown_keyword', v_subscriber.subscriber_id, jsonb_build_object(
                    'keyword', v_parsed->>'keyword', 'short_code', v_short_code,
                    'help', cp.sms_help_text(v_carrier.carrier_id, v_subscriber.subscriber_id, v_short_code))),
                null, v_short_code))
        when v_command = 'sub' then cp.mo_subscribe(v_carrier, v_subscriber, v_short_code, v_keyword, v_mo_id, v_text)
        when v_command = 'buy' then cp.mo_buy(v_carrier, v_subscriber, v_short_code, v_keyword, v_mo_id, v_text)
        when v_command = 'yes' then cp.mo_confirm(v_carrier, v_subscriber, v_short_code, v_mo_id, v_text)
        when v_command = 'stop' then cp.mo_stop(v_carrier, v_subscriber, v_short_code, 'one', v_parsed->>'keyword')
        when v_command = 'stop_all' then cp.mo_stop(v_carrier, v_subscriber, v_short_code, 'all', null)
        when v_command = 'help' then jsonb_build_object('status', 'help', 'reply_id', cp.queue_reply(v_subscriber.subscriber_id,
                             cp.sms_help_text(v_carrier.carrier_id, v_subscriber.subscriber_id, v_short_code),
                             null, v_short_code))
        else jsonb_build_object('status', 'not_understood', 'reply_id', cp.queue_reply(v_subscriber.subscriber_id,
                 cp.sms_text('sms_unknown', v_subscriber.subscriber_id, jsonb_build_object('help',
                     cp.sms_help_text(v_carrier.carrier_id, v_subscriber.subscriber_id, v_short_code))),
                 null, v_short_code))
    end;
    v_result := jsonb_strip_nulls(v_result);
    update cp.mo_inbox set subscriber_id = v_subscriber.subscriber_id, result = v_result where mo_id = v_mo_id;
    perform cp.emit_event('mo', v_mo_id, 'received',
                          jsonb_build_object('carrier', p_carrier, 'command', v_command, 'short_code', v_short_code,
                                             'subscriber_id', v_subscriber.subscriber_id, 'result', v_result));
    return jsonb_build_object('id', v_mo_id, 'command', v_command) || v_result;
end
$$;

-- Register (or re-point) an SMS keyword: SUB <keyword> to the carrier's short code subscribes to the
-- merchant's product on the plan. A keyword belongs to one merchant per carrier short code.
create or replace function admin.add_sms_keyword(p_carrier text, p_short_code text, p_keyword text, p_merchant text,
                                                 p_product text, p_plan text)
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_carrier cp.carrier;
    v_product cp.product;
    v_keyword text := cp.normalize_mo_text(p_keyword);
    v_codes jsonb;
    v_row cp.sms_keyword;
begin
    v_carrier := cp.named_carrier(p_carrier);
    select p.* into v_product from cp.product p join cp.merchant m using (merchant_id)
    where m.code = p_merchant and p.code = p_product;
    if not found then
        perform cp.fail('CP003', format('unknown product %L of merchant %L', left(p_product, 64),
                                        left(p_merchant, 64)));
    end if;
    if v_keyword !~ '^[A-Z0-9]{1,20}$' or (cp.parse_mo(v_keyword)->>'command') <> 'keyword' then
        perform cp.fail('CP080', format('keyword %L must be one word of letters and digits, not a command word',
                                        left(p_keyword, 64)));
    end if;
    if p_plan is null or p_plan not in ('daily', 'weekly', 'monthly') then
        perform cp.fail('CP052', format('plan %L must be daily, weekly or monthly', left(p_plan, 64)));
    end if;
    v_codes := v_carrier.spec#>'{smpp,source_short_codes}';
    if p_short_code is null or (v_codes is not null and not v_codes ? p_short_code) then
        perform cp.fail('CP080', format('short code %L is not one of carrier %s''s (%s)', left(p_short_code, 64),
                                        v_carrier.code, v_codes));
    end if;
    select * into v_row from cp.sms_keyword
    where carrier_id = v_carrier.carrier_id and short_code = p_short_code and keyword = v_keyword;
    if found and v_row.merchant_id <> v_product.merchant_id then
        perform cp.fail('CP080', format('keyword %s on %s is taken by another merchant', v_keyword, p_short_code));
    end if;
    insert into cp.sms_keyword (carrier_id, short_code, keyword, merchant_id, product_id, plan)
    values (v_carrier.carrier_id, p_short_code, v_keyword, v_product.merchant_id, v_product.product_id,
            p_plan::cp.plan)
    on conflict (carrier_id, short_code, keyword) do update
        set product_id = excluded.product_id, plan = excluded.plan, active = true
    returning * into v_row;
    perform cp.price_point_for(v_row.product_id, v_row.carrier_id, v_row.plan);
    return jsonb_build_object('id', v_row.keyword_id, 'status', 'saved', 'keyword', v_keyword,
                              'short_code', p_short_code);
end
$$;

-- Apply the receipts waiting in the inbox for a call whose carrier id (carrier_ref) is now known,
-- oldest first: a receipt can overtake the submit_sm_resp that tells us the id. Returns how many applied.
create or replace function cp.rematch_callbacks(p_call_id bigint) returns integer
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_call cp.carrier_call;
    v_part text;
    v_row cp.callback_inbox;
    v_applied integer := 0;
begin
    select * into v_call from cp.carrier_call where call_id = p_call_id;
    if v_call.carrier_ref is null then
        return 0;
    end if;
    -- Same lock as adapter.record_callback takes per id, so a receipt recorded concurrently is
    -- either seen here or sees this id.
    foreach v_part in array string_to_array(v_call.carrier_ref, ',') loop
        perform pg_catalog.pg_advisory_xact_lock(v_call.carrier_id, hashtext(v_part));
    end loop;
    for v_row in
        select i.* from cp.callback_inbox i
        where i.carrier_id = v_call.carrier_id and i.payload ? 'carrier_ref'
          and i.payload->>'carrier_ref' = any (string_to_array(v_call.carrier_ref, ','))
          and i.payload->>'correlator' is null
          and coalesce(i.payload->>'outcome', '') in ('succeeded', 'failed', 'unknown')
        order by i.received_at, i.dedupe_key
    loop
        select * into v_call from cp.carrier_call where call_id = p_call_id;
        -- A call back in the queue is not out at the carrier: its receipts wait for it to be sent.
        exit when v_call.status in ('done', 'failed', 'queued');
        perform cp.apply_callback_result(v_call, v_row.payload);
        insert into cp.carrier_log (call_id, procedure_id, carrier_id, operation, outcome, reason, carrier_code,
                                    request, response)
        values (v_call.call_id, v_call.procedure_id, v_call.carrier_id, v_call.operation, v_row.payload->>'outcome',
                v_row.payload->>'reason', v_row.payload->>'carrier_code', null,
                (v_row.payload - 'raw') || jsonb_build_object('rematched', true));
        v_applied := v_applied + 1;
    end loop;
    return v_applied;
end
$$;

-- Sweep: receipts still in the inbox for calls of a carrier that wait for one (awaiting_result or
-- unknown). The trigger on carrier_ref does this at once; the sweep is for the reconciler.
create or replace function adapter.rematch_callbacks(p_carrier text, p_limit integer default 1000) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_call_id bigint;
    v_calls integer := 0;
    v_applied integer := 0;
    v_n integer;
begin
    for v_call_id in
        select c.call_id from cp.carrier_call c join cp.carrier k using (carrier_id)
        where k.code = p_carrier and c.status in ('awaiting_result', 'unknown') and c.carrier_ref is not null
          and exists (select 1 from cp.callback_inbox i
                      where i.carrier_id = c.carrier_id and i.payload ? 'carrier_ref'
                        and i.payload->>'carrier_ref' = any (string_to_array(c.carrier_ref, ',')))
        order by c.call_id
        limit p_limit
        for update of c skip locked
    loop
        v_n := cp.rematch_callbacks(v_call_id);
        v_applied := v_applied + v_n;
        v_calls := v_calls + (v_n > 0)::int;
    end loop;
    return jsonb_build_object('calls', v_calls, 'applied', v_applied);
end
$$;

-- Calls that waited longer than p_after for their delivery receipt become unknown: a premium MT may
-- still have been delivered and charged, so it is reconciled (late receipt, rematch, the carrier's
-- report), never sent again. The receipt expiry is this function's default (an hour); the reconciler
-- relies on it.
create or replace function adapter.expire_awaiting(p_carrier text, p_after interval default interval '1 hour',
                                                   p_limit integer default 1000)
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_call_id bigint;
    v_count integer := 0;
begin
    for v_call_id in
        select c.call_id from cp.carrier_call c join cp.carrier k using (carrier_id)
        where k.code = p_carrier and c.status = 'awaiting_result' and c.awaiting_since < cp.clock_now() - p_after
        order by c.awaiting_since
        limit p_limit
        for update of c skip locked
    loop
        perform cp.apply_call_result(v_call_id, jsonb_build_object('outcome', 'unknown', 'reason', 'no_receipt'));
        v_count := v_count + 1;
    end loop;
    return jsonb_build_object('unknown', v_count);
end
$$;

-- Queue an SMS to a subscriber, held until the regulation's quiet hours are over. A sensitive text
-- (a PIN) is kept only until the carrier has it: the call's text is then replaced by p_redacted_text
-- (the same message with the secret masked; cp.tg_carrier_call__scrub_sensitive).
create or replace function cp.queue_sms(p_subscriber_id bigint, p_text text, p_purpose text,
                                        p_merchant_id integer default null, p_sensitive boolean default false,
                                        p_redacted_text text default null)
returns bigint
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_subscriber cp.subscriber;
    v_carrier cp.carrier;
    v_proc cp.procedure;
    v_at timestamptz;
begin
    select * into v_subscriber from cp.subscriber where subscriber_id = p_subscriber_id;
    select * into v_carrier from cp.carrier where carrier_id = v_subscriber.carrier_id;
    -- A PIN or a reply to the subscriber's own SMS is awaited, not marketing: it goes now; notices
    -- respect quiet hours.
    v_at := case when p_purpose in ('pin', 'reply') then cp.clock_now()
                 else cp.next_sms_time(cp.effective_rules(v_carrier.carrier_id),
                                       cp.subscriber_timezone(p_subscriber_id), cp.clock_now()) end;
    v_proc := cp.new_procedure('sms', v_subscriber, p_merchant_id, 0, v_carrier.currency,
                               p_metadata => jsonb_build_object('purpose', p_purpose));
    perform cp.queue_call(v_proc.procedure_id, 'send_sms',
                          jsonb_build_object('msisdn', v_subscriber.msisdn, 'text', p_text, 'purpose', p_purpose,
                                             'sensitive', p_sensitive)
                          || case when p_sensitive then jsonb_build_object('redacted_text',
                                                                           coalesce(p_redacted_text, '[redacted]'))
                                  else '{}'::jsonb end,
                          v_at);
    return v_proc.procedure_id;
end
$$;

-- The receipt SMS some regulations require after every charge (e.g. the UK's).
create or replace function cp.queue_charge_receipt(p_proc cp.procedure) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    perform cp.queue_sms(p_proc.subscriber_id,
                         cp.sms_text('receipt', p_proc.subscriber_id, jsonb_build_object(
                             'amount', cp.format_major(p_proc.collected_minor, p_proc.currency),
                             'currency', p_proc.currency,
                             'merchant', (select name from cp.merchant where merchant_id = p_proc.merchant_id),
                             'product', (select name from cp.product where product_id = p_proc.product_id))),
                         'receipt', p_proc.merchant_id);
end
$$;
