-- SMS texts per country and language (cp.sms_template). Every text a subscriber receives is
-- picked here: the subscriber's language (else their country's), their carrier's country, then
-- the '*' (any country) row, then English. Placeholders are written {name}.
-- Loaded before 100_procedures.sql and the files after it: SQL-language functions there call
-- cp.sms_text, and a SQL function's body is checked when it is created.

-- A subscriber's language: their own, else their carrier's country's.
create or replace function cp.subscriber_language(p_subscriber_id bigint) returns text
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select coalesce(s.language, co.language, 'en')
    from cp.subscriber s join cp.carrier c using (carrier_id) join cp.country co on co.country = c.country
    where s.subscriber_id = p_subscriber_id
$$;

-- Fill {name} placeholders of a text from a jsonb object (missing names stay as written).
create or replace function cp.fill_template(p_text text, p_vars jsonb) returns text
language plpgsql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_text text := p_text;
    v_key text;
    v_value text;
begin
    for v_key, v_value in select key, value from jsonb_each_text(coalesce(p_vars, '{}')) loop
        v_text := replace(v_text, '{' || v_key || '}', coalesce(v_value, ''));
    end loop;
    return v_text;
end
$$;

-- The template text for a code, country and language, with the fallbacks described above.
create or replace function cp.sms_template_text(p_code text, p_country text, p_language text) returns text
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_text text;
begin
    select t.text into v_text from cp.sms_template t
    where t.code = p_code and t.country in (p_country, '*') and t.language in (p_language, 'en')
    order by t.language = p_language desc, t.country = p_country desc
    limit 1;
    if v_text is null then
        perform cp.fail('CP100', format('no SMS template %L for %s/%s (nor a default)', p_code, p_country, p_language));
    end if;
    return v_text;
end
$$;

-- The text of template p_code for one subscriber, placeholders filled from p_vars.
create or replace function cp.sms_text(p_code text, p_subscriber_id bigint, p_vars jsonb default '{}')
returns text
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select cp.fill_template(cp.sms_template_text(p_code, c.country, cp.subscriber_language(s.subscriber_id)), p_vars)
    from cp.subscriber s join cp.carrier c using (carrier_id)
    where s.subscriber_id = p_subscriber_id
$$;

-- Digits after the decimal point of a currency's major unit (ISO 4217): most have 2, a few none
-- (UGX, XOF, JPY, ...) or 3 (KWD, BHD, ...). Minor units are what we store; this is only for people.
create or replace function cp.currency_exponent(p_currency text) returns integer
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select case
               when p_currency in ('BIF', 'CLP', 'DJF', 'GNF', 'ISK', 'JPY', 'KMF', 'KRW', 'PYG', 'RWF', 'UGX',
                                   'UYI', 'VND', 'VUV', 'XAF', 'XOF', 'XPF') then 0
               when p_currency in ('BHD', 'IQD', 'JOD', 'KWD', 'LYD', 'OMR', 'TND') then 3
               else 2 end
$$;

-- An amount in major units with the currency's own number of decimals: 5.00, 500 (UGX), 1.250 (KWD).
create or replace function cp.format_major(p_amount_minor bigint, p_currency text) returns text
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select case when e = 0 then p_amount_minor::text
                else to_char(p_amount_minor / power(10::numeric, e), 'FM999999999999990.' || repeat('0', e)) end
    from (select cp.currency_exponent(p_currency) as e) x
$$;

-- An amount for people: R5.00, £3.00, 200.00 NGN, 500 UGX.
create or replace function cp.format_money(p_amount_minor bigint, p_currency text) returns text
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select case p_currency
               when 'ZAR' then 'R' || cp.format_major(p_amount_minor, p_currency)
               when 'GBP' then '£' || cp.format_major(p_amount_minor, p_currency)
               when 'EUR' then '€' || cp.format_major(p_amount_minor, p_currency)
               else cp.format_major(p_amount_minor, p_currency) || ' ' || p_currency end
$$;

-- Create or replace one SMS template (operators adapt wording per country and language).
create or replace function admin.set_sms_template(p_code text, p_country text, p_language text, p_text text)
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    if p_text is null or btrim(p_text) = '' then
        perform cp.fail('CP080', 'an SMS template needs a text');
    end if;
    insert into cp.sms_template (code, country, language, text)
    values (p_code, coalesce(upper(nullif(p_country, '*')), '*'), lower(p_language), p_text)
    on conflict (code, country, language) do update set text = excluded.text;
    return jsonb_build_object('id', p_code, 'status', 'saved', 'country', coalesce(upper(nullif(p_country, '*')), '*'),
                              'language', lower(p_language));
end
$$;


-- Shipped texts. Existing rows are left alone, so an operator's wording survives a re-run; change a
-- shipped text with admin.set_sms_template. The English defaults keep the wording used before
-- templates existed.
insert into cp.sms_template (code, country, language, text) values
('pin', '*', 'en', 'Your {merchant} PIN for {product} ({purpose}) is {pin}. Do not share it.'),
('receipt', '*', 'en', 'Receipt: you paid {amount} {currency} to {merchant} for {product}. Help: reply HELP.'),
('reminder', '*', 'en',
 'Reminder: your {product} subscription from {merchant} renews on {renews_at} for {amount} {currency}. '
 'To stop, reply STOP.'),
('premium_mt', '*', 'en', 'Thank you for buying {product} from {merchant} for {price}. Help: reply HELP.'),
('sms_confirm', '*', 'en',
 '{merchant}: reply YES within {minutes} min to subscribe to {product} for {price}/{period}. '
 'Cancel any time: send STOP {keyword} to {short_code}.'),
('sms_confirm', 'ZA', 'en',
 'Reply YES within {minutes} min to join {product} from {merchant} at {price}/{period}, billed {frequency} '
 'until you send STOP {keyword} to {short_code}. Help: reply HELP.'),
('sms_confirm', 'ZA', 'af',
 'Antwoord YES binne {minutes} min om by {product} van {merchant} aan te sluit teen {price}/{period}, '
 '{frequency} gehef totdat jy STOP {keyword} na {short_code} stuur.'),
('sms_welcome', '*', 'en',
 'You are subscribed to {product} from {merchant} at {price}/{period}. To stop, send STOP {keyword} to {short_code}.'),
('sms_already', '*', 'en', 'You are already subscribed to {product} from {merchant}. To stop, send STOP {keyword}.'),
('sms_expired', '*', 'en', 'Your request to join {product} has expired. Send SUB {keyword} to {short_code} to try again.'),
('sms_nothing_to_confirm', '*', 'en', 'There is nothing to confirm. Send SUB <keyword> to join, or HELP for help.'),
('sms_stopped', '*', 'en', 'You have been unsubscribed from {services}. You will not be charged again.'),
('sms_none_to_stop', '*', 'en', 'You have no subscriptions to stop. Reply HELP for help.'),
('sms_unknown_keyword', '*', 'en', 'Sorry, {keyword} is not a service on {short_code}. {help}'),
('sms_refused', '*', 'en', 'Sorry, we could not subscribe you to {product}: {reason}'),
('sms_buy_refused', '*', 'en', 'Sorry, we could not sell you {product}: {reason}'),
('sms_help', '*', 'en', '{services}. To stop: send STOP <keyword> or STOP ALL to {short_code}.'),
('sms_unknown', '*', 'en', 'Sorry, we did not understand your message. {help}'),
('period_daily', '*', 'en', 'day'), ('period_weekly', '*', 'en', 'week'), ('period_monthly', '*', 'en', 'month'),
('freq_daily', '*', 'en', 'daily'), ('freq_weekly', '*', 'en', 'weekly'), ('freq_monthly', '*', 'en', 'monthly'),
('period_daily', '*', 'af', 'dag'), ('period_weekly', '*', 'af', 'week'), ('period_monthly', '*', 'af', 'maand'),
('freq_daily', '*', 'af', 'daagliks'), ('freq_weekly', '*', 'af', 'weekliks'), ('freq_monthly', '*', 'af', 'maandeliks')
on conflict (code, country, language) do nothing;
