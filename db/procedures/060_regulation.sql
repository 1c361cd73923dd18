-- Regulation as data: presets per country or region, overridden per carrier, evaluated here.
-- Amount caps are in minor units of the preset's cap_currency and apply only to carriers billing
-- in that currency; a carrier in another currency states its own caps in rules_override.

-- The rules in force for a carrier: the defaults of cp.rule_key, then its preset, then its overrides.
create or replace function cp.effective_rules(p_carrier_id integer) returns jsonb
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select (select coalesce(jsonb_object_agg(k.key, k.default_value), '{}')
            from cp.rule_key k where k.default_value is not null)
           || r.rules
           || c.rules_override
           || case when c.spec ? 'charging_hours' then jsonb_build_object('charging_hours', c.spec->'charging_hours')
                   else '{}'::jsonb end
    from cp.carrier c join cp.regulation r on r.code = c.regulation_code
    where c.carrier_id = p_carrier_id
$$;

-- A rule's amount cap for this currency, or null when none applies.
create or replace function cp.rule_cap(p_rules jsonb, p_name text, p_currency text) returns bigint
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select case when p_rules ? p_name and coalesce(p_rules->>'cap_currency', p_currency) = p_currency
                then (p_rules->>p_name)::bigint end
$$;

-- Whether a local time of day lies inside a window written 'HH:MM-HH:MM' (may wrap midnight).
create or replace function cp.in_window(p_local time, p_window text) returns boolean
language plpgsql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_from time;
    v_to time;
begin
    if p_window is null or p_window = '' then
        return true;
    end if;
    v_from := split_part(p_window, '-', 1)::time;
    v_to := split_part(p_window, '-', 2)::time;
    if v_from = v_to then
        return true;
    elsif v_from < v_to then
        return p_local >= v_from and p_local < v_to;
    end if;
    return p_local >= v_from or p_local < v_to;
end
$$;

-- The first moment at or after p_at inside a daily charging window ('HH:MM-HH:MM' in p_timezone's local
-- time): p_at itself while the window is open (or there is none), else the window's next opening.
-- A charge outside the hours is not refused later on: it waits for this moment.
create or replace function cp.next_charging_time(p_hours text, p_timezone text, p_at timestamptz)
returns timestamptz
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_local timestamp := p_at at time zone p_timezone;
    v_opening timestamp;
begin
    if cp.in_window(v_local::time, p_hours) then
        return p_at;
    end if;
    v_opening := v_local::date + split_part(p_hours, '-', 1)::time;
    if v_opening <= v_local then
        v_opening := v_opening + interval '1 day';
    end if;
    return greatest(p_at, v_opening at time zone p_timezone);
end
$$;

-- Whether SMS may be sent at this local moment under the rules' quiet hours.
-- sms_quiet_hours is a list of {"days": [ISO weekdays 1..7], "from": "HH:MM", "to": "HH:MM"}.
create or replace function cp.sms_allowed_at(p_rules jsonb, p_local timestamp) returns boolean
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select not exists (
        select 1
        from jsonb_array_elements(coalesce(p_rules->'sms_quiet_hours', '[]')) q
        where extract(isodow from p_local)::int in (select jsonb_array_elements_text(q->'days')::int)
          and cp.in_window(p_local::time, (q->>'from') || '-' || (q->>'to'))
    )
$$;

-- The first moment at or after p_at when SMS is allowed (quiet hours defer, they never drop).
create or replace function cp.next_sms_time(p_rules jsonb, p_timezone text, p_at timestamptz) returns timestamptz
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_local timestamp := p_at at time zone p_timezone;
    v_step integer := 0;
begin
    -- Quarter-hour steps over at most 8 days cover every weekly pattern.
    while not cp.sms_allowed_at(p_rules, v_local) and v_step < 8 * 96 loop
        v_local := date_trunc('hour', v_local) + make_interval(mins => (extract(minute from v_local)::int / 15 + 1) * 15);
        v_step := v_step + 1;
    end loop;
    return greatest(p_at, v_local at time zone p_timezone);
end
$$;

-- Check a charge against the per-transaction, daily and monthly caps and the charging hours.
-- p_rules: the carrier's cp.effective_rules when the caller already has them.
create or replace function cp.check_charge_rules(
    p_subscriber_id bigint, p_carrier_id integer, p_amount bigint, p_currency text, p_rules jsonb default null
) returns void
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_rules jsonb := coalesce(p_rules, cp.effective_rules(p_carrier_id));
    v_tz text := cp.subscriber_timezone(p_subscriber_id);
    v_local timestamp := cp.clock_now() at time zone v_tz;
    v_cap bigint;
    v_spent bigint;
begin
    v_cap := cp.rule_cap(v_rules, 'max_transaction_minor', p_currency);
    if v_cap is not null and p_amount > v_cap then
        perform cp.fail('CP020', format('amount %s exceeds the per-transaction cap of %s %s', p_amount, v_cap, p_currency));
    end if;
    if not cp.in_window(v_local::time, v_rules->>'charging_hours') then
        perform cp.fail('CP023', format('charging is allowed only %s local time (now %s)',
                                        v_rules->>'charging_hours', to_char(v_local, 'HH24:MI')));
    end if;
    v_cap := cp.rule_cap(v_rules, 'daily_cap_minor', p_currency);
    if v_cap is not null then
        v_spent := cp.spent_since(p_subscriber_id, date_trunc('day', v_local) at time zone v_tz);
        if v_spent + p_amount > v_cap then
            perform cp.fail('CP021', format('daily cap of %s %s reached (already %s)', v_cap, p_currency, v_spent));
        end if;
    end if;
    v_cap := cp.rule_cap(v_rules, 'monthly_cap_minor', p_currency);
    if v_cap is not null then
        v_spent := cp.spent_since(p_subscriber_id, date_trunc('month', v_local) at time zone v_tz);
        if v_spent + p_amount > v_cap then
            perform cp.fail('CP022', format('monthly cap of %s %s reached (already %s)', v_cap, p_currency, v_spent));
        end if;
    end if;
end
$$;

-- What a subscriber has spent (or has in flight) since a moment, net of refunds.
create or replace function cp.spent_since(p_subscriber_id bigint, p_since timestamptz) returns bigint
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select coalesce(sum(case when status in ('succeeded', 'partially_refunded', 'refunded')
                             then collected_minor - refunded_minor
                             else amount_minor end), 0)::bigint
    from cp.procedure
    where subscriber_id = p_subscriber_id and kind = 'charge' and created_at >= p_since
      and status in ('pending', 'in_flight', 'unknown', 'succeeded', 'partially_refunded', 'refunded')
$$;

-- Opt-in limits (api.request_optin, api.subscribe, api.confirm_optin): PIN requests and wrong PINs
-- are counted over sliding windows from cp.optin rows, per number and per merchant and carrier.

-- The sequence that counts an opt-in's PIN checks: nextval is not undone by a rollback, so a caller
-- that rolls back a wrong guess has spent it all the same.
create or replace function cp.pin_checks_sequence(p_optin_id bigint) returns text
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select pg_catalog.format('cp.%I', 'pin_checks_' || p_optin_id)
$$;

-- PIN checks made on an opt-in, rolled-back ones included: its sequence while it counts, the
-- folded count once cp.close_pin_checks has dropped the sequence.
create or replace function cp.optin_checks(p_optin cp.optin) returns integer
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select coalesce(p_optin.pin_checks,
                    pg_catalog.pg_sequence_last_value(pg_catalog.to_regclass(cp.pin_checks_sequence(p_optin.optin_id))),
                    0)::integer
$$;

-- Wrong PINs on an opt-in: every check but the one that confirmed it, whether or not its
-- transaction committed.
create or replace function cp.optin_failures(p_optin cp.optin) returns integer
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select greatest(p_optin.attempts,
                    cp.optin_checks(p_optin) - case when p_optin.status in ('confirmed', 'used') then 1 else 0 end)
$$;

-- When wrong PINs counted over a sliding window of p_window fall below p_limit again, or null when
-- they are below it already. Each opt-in's wrong PINs (p_failures) stay in the window until p_window
-- after its expiry (p_expires): it could have been checked up to then.
create or replace function cp.lock_until(p_expires timestamptz[], p_failures integer[], p_window interval,
                                         p_limit integer)
returns timestamptz
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select min(x.expires_at) filter (where x.newer - x.failures < p_limit) + p_window
    from (select e.expires_at, e.failures,
                 sum(e.failures) over (order by e.expires_at desc, e.n desc) as newer,
                 sum(e.failures) over () as total
          from unnest(p_expires, p_failures) with ordinality as e(expires_at, failures, n)) x
    where x.total >= p_limit
$$;

-- Until when a number is locked for wrong PINs (on opt-ins of every merchant, rolled-back checks
-- included) under its carrier's daily and 30-day limits, or null when it is not.
create or replace function cp.msisdn_pin_lock(p_subscriber_id bigint, p_rules jsonb) returns timestamptz
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    with f as materialized (
        select o.expires_at, cp.optin_failures(o) as failures
        from cp.optin o
        where o.subscriber_id = p_subscriber_id
          and o.created_at > cp.clock_now() - interval '31 days'  -- an opt-in lives a day at most
          and o.expires_at > cp.clock_now() - interval '30 days'
    )
    select greatest(
        cp.lock_until(array_agg(f.expires_at) filter (where f.expires_at > cp.clock_now() - interval '1 day'),
                      array_agg(f.failures) filter (where f.expires_at > cp.clock_now() - interval '1 day'),
                      interval '1 day', (p_rules->>'pin_failures_per_msisdn_day')::int),
        cp.lock_until(array_agg(f.expires_at), array_agg(f.failures), interval '30 days',
                      (p_rules->>'pin_failures_per_msisdn_30d')::int))
    from f
$$;

-- Until when a merchant may check no more PINs of a carrier's numbers: its wrong PINs of the last
-- day (as committed, and as folded in by cp.close_pin_checks) reached the carrier's daily budget.
create or replace function cp.merchant_pin_lock(p_merchant_id integer, p_carrier_id integer, p_rules jsonb)
returns timestamptz
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select cp.lock_until(array_agg(o.expires_at), array_agg(o.attempts), interval '1 day',
                         (p_rules->>'pin_failures_per_merchant_day')::int)
    from cp.optin o
    where o.merchant_id = p_merchant_id and o.carrier_id = p_carrier_id and o.attempts > 0
      and o.created_at > cp.clock_now() - interval '2 days' and o.expires_at > cp.clock_now() - interval '1 day'
$$;

-- When a number may be sent its next PIN under its carrier's hourly and daily limits (requests of
-- every merchant count), or null when it may be now.
create or replace function cp.msisdn_pin_request_wait(p_subscriber_id bigint, p_rules jsonb) returns timestamptz
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select greatest(
        (select o.created_at + interval '1 hour' from cp.optin o
         where o.subscriber_id = p_subscriber_id and o.created_at > cp.clock_now() - interval '1 hour'
         order by o.created_at desc offset (p_rules->>'pin_requests_per_msisdn_hour')::int - 1 limit 1),
        (select o.created_at + interval '1 day' from cp.optin o
         where o.subscriber_id = p_subscriber_id and o.created_at > cp.clock_now() - interval '1 day'
         order by o.created_at desc offset (p_rules->>'pin_requests_per_msisdn_day')::int - 1 limit 1))
$$;

-- When a merchant may send its next PIN to a carrier's numbers under the carrier's hourly budget,
-- or null when it may be now.
create or replace function cp.merchant_pin_request_wait(p_merchant_id integer, p_carrier_id integer, p_rules jsonb)
returns timestamptz
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select o.created_at + interval '1 hour' from cp.optin o
    where o.merchant_id = p_merchant_id and o.carrier_id = p_carrier_id
      and o.created_at > cp.clock_now() - interval '1 hour'
    order by o.created_at desc offset (p_rules->>'pin_requests_per_merchant_hour')::int - 1 limit 1
$$;

-- Fold the PIN checks of expired opt-ins into their rows and drop their sequences; a pending one
-- becomes expired. Checks a rollback took back count as wrong PINs from here on (the merchant's
-- daily budget reads the rows). Numbers being checked right now are left for the next run.
-- Returns how many were folded. Called by sched.run_due.
create or replace function cp.close_pin_checks(p_limit integer default 500) returns integer
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_optin cp.optin;
    v_checks integer;
    v_count integer := 0;
begin
    for v_optin in
        select o.* from cp.optin o join cp.subscriber s using (subscriber_id)
        where o.pin_checks is null and o.expires_at <= cp.clock_now()
        order by o.expires_at
        limit p_limit
        for no key update of o, s skip locked
    loop
        v_checks := cp.optin_checks(v_optin);
        update cp.optin
        set pin_checks = v_checks,
            attempts = greatest(attempts, v_checks - case when status in ('confirmed', 'used') then 1 else 0 end),
            status = case when status = 'pending' then 'expired'::cp.optin_status else status end
        where optin_id = v_optin.optin_id;
        execute format('drop sequence if exists %s', cp.pin_checks_sequence(v_optin.optin_id));
        v_count := v_count + 1;
    end loop;
    return v_count;
end
$$;

-- What is wrong with the opt-in limits of a preset or a carrier override, or null: the ranges that
-- keep PINs unguessable and opt-ins possible (cp.rules_problem checks the rest).
create or replace function cp.optin_rules_problem(p_rules jsonb) returns text
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select format('rule %s must be a whole number from %s to %s, not %s', r.name, r.low, r.high,
                  left((p_rules->r.name)::text, 20))
    from (values ('pin_length', 4, 10), ('pin_ttl_minutes', 1, 1440), ('pin_max_attempts', 1, 10),
                 ('pin_requests_per_msisdn_hour', 1, 1000000000), ('pin_requests_per_msisdn_day', 1, 1000000000),
                 ('pin_failures_per_msisdn_day', 1, 1000000000), ('pin_failures_per_msisdn_30d', 1, 1000000000),
                 ('pin_requests_per_merchant_hour', 1, 1000000000),
                 ('pin_failures_per_merchant_day', 1, 1000000000)) r (name, low, high)
    where p_rules ? r.name
      and not coalesce(case when jsonb_typeof(p_rules->r.name) = 'number' and (p_rules->>r.name) ~ '^[0-9]{1,10}$'
                            then (p_rules->>r.name)::bigint between r.low and r.high end, false)
    limit 1
$$;

-- The first key of a preset's or carrier override's rules that cp.rule_key does not know, or null: a
-- misspelt or unsupported rule would look in force and be ignored, so it is refused when saved.
create or replace function cp.unknown_rule_key(p_rules jsonb) returns text
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select r.key
    from jsonb_object_keys(case when jsonb_typeof(p_rules) = 'object' then p_rules else '{}' end) r (key)
    where not exists (select 1 from cp.rule_key k where k.key = r.key)
    order by r.key
    limit 1
$$;

-- Whether a rule's value has the shape its type (cp.rule_key.type) needs, so the functions that read
-- it never meet a cast error at payment time.
create or replace function cp.rule_value_fits(p_type text, p_value jsonb) returns boolean
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select case p_type
        when 'boolean' then jsonb_typeof(p_value) = 'boolean'
        when 'integer' then jsonb_typeof(p_value) = 'number' and p_value::text ~ '^[0-9]{1,9}$'
        when 'minor' then jsonb_typeof(p_value) = 'number' and p_value::text ~ '^[0-9]{1,18}$'
        when 'currency' then jsonb_typeof(p_value) = 'string' and p_value #>> '{}' ~ '^[A-Z]{3}$'
        when 'window' then jsonb_typeof(p_value) = 'string'
                           and p_value #>> '{}' ~ '^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]|24):[0-5][0-9]$'
        when 'quiet_hours' then jsonb_typeof(p_value) = 'array' and not exists (
            select 1 from jsonb_array_elements(p_value) q
            where jsonb_typeof(q) is distinct from 'object'
               or coalesce(q->>'from', '') !~ '^([01][0-9]|2[0-3]):[0-5][0-9]$'
               or coalesce(q->>'to', '') !~ '^([01][0-9]|2[0-3]|24):[0-5][0-9]$'
               or jsonb_typeof(q->'days') is distinct from 'array'
               or exists (select 1 from jsonb_array_elements(q->'days') d
                          where d::text !~ '^[1-7]$'))
        else false
    end
$$;

-- What is wrong with the values of a preset's or carrier override's rules, or null: rules that are
-- not an object, a value of the wrong type for its key, a PIN length outside 4-10 digits or a limit
-- that is not a positive whole number (PINs guessable or opt-ins impossible) is refused when the
-- rules are saved rather than found at a request. Unknown keys are cp.unknown_rule_key's.
create or replace function cp.rules_problem(p_rules jsonb) returns text
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select coalesce(
        case when p_rules is not null and jsonb_typeof(p_rules) <> 'object'
             then format('rules must be an object, not %s', jsonb_typeof(p_rules)) end,
        (select format('rule %s must be of type %s, not %s', r.key, k.type, left(r.value::text, 20))
         from jsonb_each(case when jsonb_typeof(p_rules) = 'object' then p_rules else '{}' end) r
         join cp.rule_key k on k.key = r.key
         where not cp.rule_value_fits(k.type, r.value)
         order by r.key
         limit 1),
        cp.optin_rules_problem(p_rules))
$$;

-- Create or replace a regulation preset.
create or replace function admin.upsert_regulation(p_code text, p_name text, p_source text, p_rules jsonb)
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_unknown text := cp.unknown_rule_key(p_rules);
    v_problem text := cp.rules_problem(p_rules);
begin
    if v_unknown is not null then
        perform cp.fail('CP090', format('regulation %s: rule %s is not a known rule key (cp.rule_key)',
                                        left(p_code, 40), left(v_unknown, 64)));
    end if;
    if v_problem is not null then
        perform cp.fail('CP080', format('regulation %s: %s', left(p_code, 40), v_problem));
    end if;
    insert into cp.regulation (code, name, source, rules) values (p_code, p_name, p_source, p_rules)
    on conflict (code) do update set name = excluded.name, source = excluded.source, rules = excluded.rules;
    return jsonb_build_object('id', p_code, 'status', 'saved');
end
$$;


-- Shipped presets, drawn from public rules; each names its source. Verify before claiming compliance.
-- A preset sets only keys of cp.rule_key, each enforced somewhere. WASPA also asks a subscriber to
-- confirm before their monthly spend passes R200; carrierpay has no monthly re-confirmation journey,
-- so the ZA preset does not claim that rule (docs/sql-api.md, Regulation rule keys).
-- None sets its own opt-in limits: all take the defaults of cp.effective_rules (6-digit PINs, 5 PINs
-- an hour and 10 a day per number, 10 wrong PINs a day and 30 in 30 days per number, 5000 PINs an
-- hour and 1000 wrong PINs a day per merchant and carrier), which keep a brute force on one number
-- within 1 in 10,000 per 30 days (docs/sql-api.md, Opt-in limits).
insert into cp.regulation (code, name, source, rules) values
('DEFAULT', 'No specific rules', 'carrierpay defaults', '{}'),
('EU', 'EU electronic-communications exclusion',
 'PSD2 Art. 3(l); EBA Q&A 2018_4181',
 '{"cap_currency": "EUR", "max_transaction_minor": 5000, "monthly_cap_minor": 30000,
   "optin_subscription": true, "refund_window_days": 14}'),
('GB', 'United Kingdom',
 'Payment Services Regulations 2017; PSA Code of Practice 15',
 '{"cap_currency": "GBP", "max_transaction_minor": 4000, "monthly_cap_minor": 24000,
   "optin_subscription": true, "optin_one_time": true, "receipt_after_charge": true,
   "refund_window_days": 30}'),
('ZA', 'South Africa',
 'WASPA Code of Conduct',
 '{"optin_subscription": true,
   "sms_quiet_hours": [{"days": [7], "from": "00:00", "to": "00:00"},
                       {"days": [6], "from": "13:00", "to": "09:00"},
                       {"days": [1,2,3,4,5], "from": "20:00", "to": "08:00"}]}'),
('IN', 'India',
 'TRAI regulations on value-added services and commercial communications',
 '{"optin_subscription": true, "renewal_notice_hours": 24,
   "sms_quiet_hours": [{"days": [1,2,3,4,5,6,7], "from": "21:00", "to": "09:00"}],
   "refund_window_days": 1}'),
('NG', 'Nigeria', 'NCC directive on value-added services (2018)',
 '{"optin_subscription": true}'),
('PK', 'Pakistan', 'PTA regulations on value-added services',
 '{"optin_subscription": true, "cap_currency": "PKR", "daily_cap_minor": 2000}')
on conflict (code) do update set name = excluded.name, source = excluded.source, rules = excluded.rules;

insert into cp.country (country, name, vat_bp) values
('GB', 'United Kingdom', 2000), ('DE', 'Germany', 1900), ('FR', 'France', 2000),
('ZA', 'South Africa', 1500), ('IN', 'India', 1800), ('NG', 'Nigeria', 750),
('PK', 'Pakistan', 1950), ('KE', 'Kenya', 1600), ('BR', 'Brazil', 0), ('US', 'United States', 0)
on conflict (country) do update set name = excluded.name, vat_bp = excluded.vat_bp;
