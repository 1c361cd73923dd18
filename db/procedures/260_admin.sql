-- Onboarding for operators (role carrierpay_admin): carriers, merchants, products, price points.

-- Fetch a required text field from a spec document, or raise CP090 naming it.
create or replace function cp.spec_text(p_spec jsonb, p_field text) returns text
language plpgsql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    if p_spec->>p_field is null or p_spec->>p_field = '' then
        perform cp.fail('CP090', format('carrier spec: %s is required', p_field));
    end if;
    return p_spec->>p_field;
end
$$;

-- Create or update a carrier from its spec document (carriers/<code>/carrier.yaml as jsonb).
create or replace function admin.onboard_carrier(p_spec jsonb) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_code text := cp.spec_text(p_spec, 'code');
    v_country text := upper(cp.spec_text(p_spec, 'country'));
    v_regulation text := coalesce(p_spec->>'regulation', 'DEFAULT');
    v_tz text := cp.spec_text(p_spec, 'timezone');
    v_currency text := upper(cp.spec_text(p_spec, 'currency'));
    v_id integer;
    v_prefix text;
begin
    perform cp.spec_text(p_spec, 'name');
    perform cp.spec_text(p_spec, 'mcc');
    perform cp.spec_text(p_spec, 'mnc');
    if v_code !~ '^[a-z0-9_]+$' then
        perform cp.fail('CP090', format('carrier spec: code %L must be lowercase letters, digits and _', v_code));
    end if;
    if not exists (select 1 from pg_timezone_names where name = v_tz) then
        perform cp.fail('CP090', format('carrier spec: timezone %L is not a known IANA zone', v_tz));
    end if;
    if v_currency !~ '^[A-Z]{3}$' then
        perform cp.fail('CP090', format('carrier spec: currency %L is not an ISO 4217 code', v_currency));
    end if;
    if not exists (select 1 from cp.country where country = v_country) then
        perform cp.fail('CP090', format('carrier spec: country %L is not configured (cp.country)', v_country));
    end if;
    if not exists (select 1 from cp.regulation where code = v_regulation) then
        perform cp.fail('CP090', format('carrier spec: regulation %L is not a known preset', v_regulation));
    end if;
    if jsonb_typeof(p_spec->'number_ranges') is distinct from 'array' or jsonb_array_length(p_spec->'number_ranges') = 0 then
        perform cp.fail('CP090', 'carrier spec: number_ranges must list at least one E.164 prefix');
    end if;
    -- Whoever can reach the callback server could otherwise settle payments: a source address alone
    -- proves nothing, so at least one check must prove the sender holds a credential.
    if p_spec ? 'callbacks' and jsonb_typeof(p_spec->'callbacks') = 'object' and not exists (
        select 1 from jsonb_array_elements(case jsonb_typeof(p_spec#>'{callbacks,auth}')
                                               when 'array' then p_spec#>'{callbacks,auth}' else '[]' end) a
        where a->>'type' in ('signature', 'basic', 'bearer', 'mutual_tls'))
    then
        perform cp.fail('CP090', 'carrier spec: callbacks.auth needs a credential check (signature, basic, bearer '
                                 'or mutual_tls); an ip_allow_list alone does not authenticate a callback');
    end if;
    -- The same for the subscribers' texts a carrier forwards: a forged STOP, YES or BUY acts for someone.
    if p_spec ? 'mo' and not exists (
        select 1 from jsonb_array_elements(case jsonb_typeof(p_spec#>'{mo,auth}')
                                               when 'array' then p_spec#>'{mo,auth}' else '[]' end) a
        where a->>'type' in ('signature', 'basic', 'bearer', 'mutual_tls'))
    then
        perform cp.fail('CP090', 'carrier spec: mo.auth needs a credential check (signature, basic, bearer '
                                 'or mutual_tls); an ip_allow_list alone does not authenticate an MO message');
    end if;
    -- What a failed charge and a balance query cost decides whether renewals are queried first
    -- (cp.balance_before_renewal): two whole non-negative numbers of one unit, or nothing.
    if p_spec#>'{terms,call_costs}' is not null and not coalesce(
           (select array_agg(c.key order by c.key) = array['balance', 'charge_failed']
                   and bool_and(jsonb_typeof(c.value) = 'number' and c.value::text ~ '^[0-9]{1,15}$')
            from jsonb_each(case jsonb_typeof(p_spec#>'{terms,call_costs}')
                                when 'object' then p_spec#>'{terms,call_costs}' else '{}' end) c), false) then
        perform cp.fail('CP090', 'carrier spec: terms.call_costs must be {charge_failed, balance}, '
                                 'each a whole number of one unit (0 to 15 digits)');
    end if;
    if cp.unknown_rule_key(p_spec->'rules') is not null then
        perform cp.fail('CP090', format('carrier spec: rule %s is not a known rule key (cp.rule_key)',
                                        left(cp.unknown_rule_key(p_spec->'rules'), 64)));
    end if;
    if cp.rules_problem(p_spec->'rules') is not null then
        perform cp.fail('CP090', 'carrier spec: ' || cp.rules_problem(p_spec->'rules'));
    end if;

    insert into cp.carrier (code, name, country, mcc, mnc, currency, timezone, tps, carrier_share_bp,
                            regulation_code, rules_override, spec)
    values (v_code, p_spec->>'name', v_country, p_spec->>'mcc', p_spec->>'mnc', v_currency, v_tz,
            coalesce((p_spec#>>'{throughput,tps}')::integer, 10),
            coalesce((p_spec#>>'{terms,carrier_share_bp}')::integer, 0),
            v_regulation, coalesce(p_spec->'rules', '{}'), p_spec)
    on conflict (code) do update set
        name = excluded.name, country = excluded.country, mcc = excluded.mcc, mnc = excluded.mnc,
        currency = excluded.currency, timezone = excluded.timezone, tps = excluded.tps,
        carrier_share_bp = excluded.carrier_share_bp, regulation_code = excluded.regulation_code,
        rules_override = excluded.rules_override, spec = excluded.spec
    returning carrier_id into v_id;

    delete from cp.carrier_prefix where carrier_id = v_id;
    for v_prefix in select jsonb_array_elements_text(p_spec->'number_ranges') loop
        if v_prefix !~ '^\+[0-9]{1,14}$' then
            perform cp.fail('CP090', format('carrier spec: number range %L is not an E.164 prefix', v_prefix));
        end if;
        if exists (select 1 from cp.carrier_prefix where prefix = v_prefix) then
            perform cp.fail('CP090', format('carrier spec: number range %s already belongs to another carrier', v_prefix));
        end if;
        insert into cp.carrier_prefix (prefix, carrier_id) values (v_prefix, v_id);
    end loop;
    -- Ranges this carrier (an aggregator) can also bill, after their own carrier, by priority.
    delete from cp.carrier_route where carrier_id = v_id;
    if p_spec ? 'routes' then
        if jsonb_typeof(p_spec->'routes') <> 'array'
           or exists (select 1 from jsonb_array_elements(p_spec->'routes') r
                      where jsonb_typeof(r) <> 'object' or coalesce(r->>'prefix', '') !~ '^\+[0-9]{1,14}$'
                         or jsonb_typeof(r->'priority') <> 'number'
                         or (r->>'priority')::numeric not between 1 and 1000
                         or (r->>'priority')::numeric <> floor((r->>'priority')::numeric)) then
            perform cp.fail('CP090', 'carrier spec: routes must be [{prefix: E.164 prefix, priority: 1..1000}]');
        end if;
        insert into cp.carrier_route (prefix, carrier_id, priority)
        select r->>'prefix', v_id, min((r->>'priority')::integer)
        from jsonb_array_elements(p_spec->'routes') r group by r->>'prefix';
    end if;
    return jsonb_build_object('id', v_id, 'code', v_code, 'status', 'onboarded');
end
$$;

-- Enable or disable a carrier (a disabled carrier takes no new payments).
create or replace function admin.set_carrier_enabled(p_carrier text, p_enabled boolean) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_id integer;
begin
    update cp.carrier set enabled = p_enabled where code = p_carrier returning carrier_id into v_id;
    if v_id is null then
        perform cp.fail('CP070', format('unknown carrier %L', p_carrier));
    end if;
    return jsonb_build_object('id', v_id, 'code', p_carrier, 'status', case when p_enabled then 'enabled' else 'disabled' end);
end
$$;

-- The comment carrierpay puts on every merchant role it creates: how add_merchant tells a role of
-- its own (made for the same merchant in another database of the server) from one it must not adopt.
create or replace function cp.merchant_role_marker(p_code text) returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $$ select 'carrierpay merchant role for ' || p_code $$;

-- A fresh password for a merchant's login role: 24 random bytes, URL-safe, shown once to the operator.
create or replace function cp.set_merchant_password(p_role text) returns text
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_password text := pg_catalog.translate(pg_catalog.encode(public.gen_random_bytes(24), 'base64'), '+/', '-_');
begin
    -- password_encryption is forced so the server keeps a SCRAM verifier, never the password itself.
    perform pg_catalog.set_config('password_encryption', 'scram-sha-256', true);
    execute pg_catalog.format('alter role %I with login password %L', p_role, v_password);
    return v_password;
end
$$;

-- Create a merchant, its database role (member of carrierpay_merchant, with a generated password)
-- and its webhook secret. Both secrets are in the returned document and nowhere else in clear.
create or replace function admin.add_merchant(p_code text, p_name text, p_webhook_url text default null,
                                              p_platform_fee_bp integer default 0)
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_role text := 'cp_merchant_' || p_code;
    v_secret text := encode(public.gen_random_bytes(32), 'hex');
    v_existing pg_catalog.pg_roles;
    v_password text;
    v_id integer;
begin
    if p_code is null or p_code !~ '^[a-z0-9_]{1,40}$' then
        perform cp.fail('CP080', format('merchant code %L must be 1-40 lowercase letters, digits or _',
                                        left(p_code, 64)));
    end if;
    if exists (select 1 from cp.merchant where code = p_code) then
        perform cp.fail('CP080', format('merchant %L already exists', p_code));
    end if;
    select * into v_existing from pg_catalog.pg_roles where rolname = v_role;
    if not found then
        execute format('create role %I login', v_role);
        execute format('comment on role %I is %L', v_role, cp.merchant_role_marker(p_code));
    elsif pg_catalog.shobj_description(v_existing.oid, 'pg_authid') is distinct from cp.merchant_role_marker(p_code)
          or v_existing.rolsuper or v_existing.rolcreaterole or v_existing.rolcreatedb
          or v_existing.rolreplication or v_existing.rolbypassrls then
        -- Roles are cluster-wide: adopting one made by someone else would hand its owner (or its
        -- privileges) a merchant's money.
        perform cp.fail('CP085', format('role %s exists and was not created by carrierpay for merchant %L',
                                        v_role, p_code));
    end if;
    execute format('grant carrierpay_merchant to %I', v_role);
    v_password := cp.set_merchant_password(v_role);
    insert into cp.merchant (code, name, db_role, webhook_url, webhook_secret, platform_fee_bp)
    values (p_code, p_name, v_role, p_webhook_url, v_secret, p_platform_fee_bp)
    returning merchant_id into v_id;
    return jsonb_build_object('id', v_id, 'code', p_code, 'status', 'created', 'db_role', v_role,
                              'db_password', v_password, 'webhook_secret', v_secret);
end
$$;

-- Issue a new password for a merchant's database role (the old one stops working at once).
create or replace function admin.rotate_merchant_password(p_merchant text) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.named_merchant(p_merchant);
begin
    return jsonb_build_object('id', v_merchant.merchant_id, 'code', p_merchant, 'status', 'rotated',
                              'db_role', v_merchant.db_role, 'db_password', cp.set_merchant_password(v_merchant.db_role));
end
$$;

-- Issue a new webhook signing secret for a merchant.
create or replace function admin.rotate_merchant_secret(p_merchant text) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_secret text := encode(public.gen_random_bytes(32), 'hex');
    v_id integer;
begin
    update cp.merchant set webhook_secret = v_secret where code = p_merchant returning merchant_id into v_id;
    if v_id is null then
        perform cp.fail('CP001', format('unknown merchant %L', left(p_merchant, 64)));
    end if;
    return jsonb_build_object('id', v_id, 'code', p_merchant, 'status', 'rotated', 'webhook_secret', v_secret);
end
$$;

-- Give a merchant a webhook signing secret chosen elsewhere: the shards of a sharded deployment
-- (docs/sharding.md) must all sign with the one secret the merchant was given.
create or replace function admin.set_merchant_secret(p_merchant text, p_secret text) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_id integer;
begin
    if p_secret is null or p_secret !~ '^[0-9a-f]{64}$' then
        perform cp.fail('CP080', 'a webhook secret is 64 lowercase hexadecimal digits (32 random bytes)');
    end if;
    update cp.merchant set webhook_secret = p_secret where code = p_merchant returning merchant_id into v_id;
    if v_id is null then
        perform cp.fail('CP001', format('unknown merchant %L', left(p_merchant, 64)));
    end if;
    return jsonb_build_object('id', v_id, 'code', p_merchant, 'status', 'saved');
end
$$;

-- Create a product (or update its retry settings) for a merchant.
create or replace function admin.add_product(p_merchant text, p_code text, p_name text,
                                             p_retry_policy text default 'step_down',
                                             p_retry_timing text default 'best_hour')
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant_id integer;
    v_id integer;
begin
    v_merchant_id := (cp.named_merchant(p_merchant)).merchant_id;
    if p_retry_policy not in ('step_down', 'accumulate', 'defer') or p_retry_timing not in ('fixed', 'best_hour', 'subscriber') then
        perform cp.fail('CP080', 'retry policy must be step_down, accumulate or defer; timing fixed, best_hour or subscriber');
    end if;
    insert into cp.product (merchant_id, code, name, retry_policy, retry_timing)
    values (v_merchant_id, p_code, p_name, p_retry_policy, p_retry_timing)
    on conflict (merchant_id, code) do update
        set name = excluded.name, retry_policy = excluded.retry_policy, retry_timing = excluded.retry_timing
    returning product_id into v_id;
    return jsonb_build_object('id', v_id, 'code', p_code, 'status', 'saved');
end
$$;

-- Add a price point: what a product costs on one carrier (or in one country) for one plan,
-- and which variant is delivered for it.
create or replace function admin.add_price_point(p_merchant text, p_product text, p_plan text,
                                                 p_amount_minor bigint, p_currency text, p_variant text,
                                                 p_carrier text default null, p_country text default null)
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_product_id integer;
    v_carrier cp.carrier;
    v_id integer;
begin
    select p.product_id into v_product_id
    from cp.product p join cp.merchant m using (merchant_id)
    where m.code = p_merchant and p.code = p_product;
    if v_product_id is null then
        perform cp.fail('CP003', format('unknown product %L of merchant %L', p_product, p_merchant));
    end if;
    if (p_carrier is null) = (p_country is null) then
        perform cp.fail('CP080', 'a price point names exactly one of carrier or country');
    end if;
    if p_plan is null or p_plan not in ('one_time', 'daily', 'weekly', 'monthly') then
        perform cp.fail('CP080', format('plan %L must be one_time, daily, weekly or monthly', p_plan));
    end if;
    if p_amount_minor is null or p_amount_minor <= 0 then
        perform cp.fail('CP006', 'a price point amount must be a positive number of minor units');
    end if;
    if p_carrier is not null then
        v_carrier := cp.named_carrier(p_carrier);
        if v_carrier.currency <> upper(p_currency) then
            perform cp.fail('CP008', format('carrier %s bills in %s, not %s', p_carrier, v_carrier.currency, p_currency));
        end if;
    end if;
    insert into cp.price_point (product_id, carrier_id, country, plan, amount_minor, currency, variant)
    values (v_product_id, v_carrier.carrier_id, upper(p_country), p_plan::cp.plan, p_amount_minor,
            upper(p_currency), p_variant)
    on conflict (product_id, coalesce(carrier_id, 0), coalesce(country, ''), plan, amount_minor)
        do update set variant = excluded.variant, active = true
    returning price_point_id into v_id;
    return jsonb_build_object('id', v_id, 'status', 'saved', 'amount_minor', p_amount_minor, 'variant', p_variant);
end
$$;


-- After how many reconciliation turns (5 min, 1 h, then daily) an unsettled call of this carrier goes to the
-- operator queue (report.calls_needing_operator): the spec's reconciliation.operator_after_turns, 3 unless it
-- says otherwise, kept within 1..60 whatever a stored spec holds.
create or replace function cp.operator_after_turns(p_spec jsonb) returns integer
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select case when jsonb_typeof(p_spec #> '{reconciliation,operator_after_turns}') = 'number'
                then least(greatest(floor((p_spec #>> '{reconciliation,operator_after_turns}')::numeric), 1), 60)::int
                else 3 end
$$;

-- The last resort for a call no reconciliation route could settle (report.calls_needing_operator):
-- the operator found out from the carrier what happened and records it through the same completion
-- path as a carrier's answer; who did it and why stays in the call's events.
create or replace function admin.settle_call(p_call_id bigint, p_outcome text, p_reason text) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_call cp.carrier_call;
    v_reason text := left(btrim(coalesce(p_reason, '')), 500);
    v_proc cp.procedure;
begin
    select * into v_call from cp.carrier_call where call_id = p_call_id for update;
    if not found then
        perform cp.fail('CP072', format('unknown carrier call %s', p_call_id));
    end if;
    if p_outcome is null or p_outcome not in ('succeeded', 'failed') then
        perform cp.fail('CP080', format('outcome must be succeeded or failed, not %L', left(p_outcome, 20)));
    end if;
    if length(v_reason) < 3 then
        perform cp.fail('CP080', 'a reason is required: how the outcome was established (kept for audit)');
    end if;
    if v_call.status not in ('unknown', 'awaiting_result') then
        perform cp.fail('CP091', format('call %s is %s: only a call whose outcome is unknown or awaited can be '
                                        'settled by an operator', p_call_id, v_call.status));
    end if;
    perform adapter.complete_calls(jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
        'call_id', p_call_id, 'outcome', p_outcome,
        'reason', case when p_outcome = 'failed' then 'settled_by_operator' end,
        'carrier_code', 'operator', 'carrier_ref', v_call.carrier_ref,
        'response', jsonb_build_object('settled_by', cp.calling_role(), 'reason', v_reason)))));
    perform cp.emit_event('carrier_call', p_call_id, 'settled_by_operator', jsonb_build_object(
        'from', v_call.status, 'outcome', p_outcome, 'reason', v_reason, 'operator', cp.calling_role(),
        'login', session_user, 'procedure_id', v_call.procedure_id, 'operation', v_call.operation));
    select * into v_call from cp.carrier_call where call_id = p_call_id;
    select * into v_proc from cp.procedure where procedure_id = v_call.procedure_id;
    return jsonb_build_object('call_id', p_call_id, 'status', v_call.status, 'procedure_id', v_proc.procedure_id,
                              'procedure_status', v_proc.status);
end
$$;
