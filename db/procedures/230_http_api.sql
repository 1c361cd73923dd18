-- The merchant HTTP API (docs/http-api.md): OAuth2 clients and tokens, and the api.* functions behind
-- the CAMARA Carrier Billing operations. `carrierpay api serve` authenticates a bearer token with
-- gateway.authenticate, SET ROLEs to the merchant's own role, and calls exactly one api.* function with
-- the request as received (jsonb, so decimal amounts arrive exact). What a CAMARA document says (its
-- status names, its amounts in major units) is decided here, not in Python.

-- The scopes an API client may hold: CAMARA's names for its operations, and ours for the extensions.
create or replace function cp.api_scopes() returns text[]
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select array['carrier-billing:payments:create', 'carrier-billing:payments:read', 'carrier-billing:payments:write',
                 'carrier-billing-refund:refunds:create', 'carrier-billing-refund:refunds:read',
                 'carrierpay:subscriptions:write', 'carrierpay:subscriptions:read', 'carrierpay:consents:write',
                 'carrierpay:balance:read']
$$;

-- A random credential as it is handed out once: 32 bytes, base64url without padding.
create or replace function cp.random_credential(p_prefix text) returns text
language sql volatile
set search_path = pg_catalog, cp, pg_temp
as $$
    select p_prefix || pg_catalog.rtrim(pg_catalog.translate(pg_catalog.encode(public.gen_random_bytes(32), 'base64'),
                                                             '+/', '-_'), '=')
$$;

-- Issue an API client for a merchant: its secret is returned here once and kept only as a digest.
-- The gateway role becomes able to act as the merchant's role (and only through SET ROLE).
create or replace function admin.add_api_client(p_merchant text, p_scopes text[] default null,
                                                p_default_product text default null)
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant;
    v_scopes text[] := coalesce(p_scopes, cp.api_scopes());
    v_unknown text;
    v_client_id text := 'cpc_' || pg_catalog.encode(public.gen_random_bytes(9), 'hex');
    v_secret text := cp.random_credential('cps_');
begin
    v_merchant := cp.named_merchant(p_merchant);
    select s into v_unknown from unnest(v_scopes) s where s is null or not (s = any (cp.api_scopes())) limit 1;
    if found or cardinality(v_scopes) = 0 then
        perform cp.fail('CP117', format('unknown scope %L: one or more of %s', left(v_unknown, 64),
                                        array_to_string(cp.api_scopes(), ', ')));
    end if;
    if p_default_product is not null then
        perform cp.merchant_product(v_merchant.merchant_id, p_default_product);
    end if;
    insert into cp.api_client (client_id, merchant_id, secret_sha256, scopes, default_product, created_at)
    values (v_client_id, v_merchant.merchant_id, pg_catalog.sha256(pg_catalog.convert_to(v_secret, 'UTF8')),
            (select array_agg(distinct s order by s) from unnest(v_scopes) s), p_default_product, now());
    perform cp.admit_gateway(v_merchant.db_role);
    return jsonb_build_object('client_id', v_client_id, 'client_secret', v_secret, 'merchant', v_merchant.code,
                              'scopes', to_jsonb(v_scopes), 'default_product', p_default_product);
end
$$;

-- The API clients (all, or one merchant's), without secrets: what an operator reviews before revoking.
create or replace function admin.list_api_clients(p_merchant text default null)
returns table (client_id text, merchant text, scopes text, default_product text, created_at timestamptz,
               revoked_at timestamptz, live_tokens bigint)
language sql stable security definer
set search_path = pg_catalog, cp, pg_temp
as $$
    select c.client_id, m.code, array_to_string(c.scopes, ' '), c.default_product, c.created_at, c.revoked_at,
           (select count(*) from cp.api_token t where t.client_id = c.client_id and t.expires_at > clock_timestamp())
    from cp.api_client c join cp.merchant m using (merchant_id)
    where p_merchant is null or m.code = p_merchant
    order by m.code, c.created_at, c.client_id
$$;

-- Revoke an API client: its secret and every token it was given stop working at once.
create or replace function admin.revoke_api_client(p_client_id text) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_client cp.api_client;
    v_tokens integer;
begin
    update cp.api_client set revoked_at = coalesce(revoked_at, now()) where client_id = p_client_id
    returning * into v_client;
    if not found then
        perform cp.fail('CP116', format('unknown API client %L', left(p_client_id, 64)));
    end if;
    delete from cp.api_token where client_id = p_client_id;
    get diagnostics v_tokens = row_count;
    return jsonb_build_object('client_id', v_client.client_id, 'revoked_at', v_client.revoked_at,
                              'tokens_revoked', v_tokens);
end
$$;

-- OAuth2 client credentials grant: a short-lived bearer token for a live client whose secret matches,
-- with the scopes asked for (all of the client's when none are). Wall-clock time, not the business
-- clock: a test or demo moving business time must not extend a credential.
create or replace function gateway.issue_token(p_client_id text, p_client_secret text, p_scope text default null,
                                               p_ttl_seconds integer default 900)
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_client cp.api_client;
    v_asked text[] := array(select distinct s from unnest(string_to_array(btrim(coalesce(p_scope, '')), ' ')) s
                            where s <> '' order by s);
    v_token text := cp.random_credential('cpt_');
    v_ttl integer := least(greatest(coalesce(p_ttl_seconds, 900), 1), 3600);
begin
    select * into v_client from cp.api_client
    where client_id = p_client_id and revoked_at is null
      and secret_sha256 = pg_catalog.sha256(pg_catalog.convert_to(coalesce(p_client_secret, ''), 'UTF8'));
    if not found then
        perform cp.fail('CP110', 'invalid client credentials');
    end if;
    if cardinality(v_asked) = 0 then
        v_asked := v_client.scopes;
    elsif not (v_asked <@ v_client.scopes) then
        perform cp.fail('CP117', format('scope %L is not granted to this client',
                                        left(array_to_string(array(select unnest(v_asked) except
                                                                   select unnest(v_client.scopes)), ' '), 64)));
    end if;
    -- Expired tokens of this client go as it asks for a new one: the table stays the size of what is live.
    delete from cp.api_token where client_id = v_client.client_id and expires_at < clock_timestamp();
    insert into cp.api_token (token_sha256, client_id, scopes, expires_at)
    values (pg_catalog.sha256(pg_catalog.convert_to(v_token, 'UTF8')), v_client.client_id, v_asked,
            clock_timestamp() + make_interval(secs => v_ttl));
    return jsonb_build_object('access_token', v_token, 'token_type', 'Bearer', 'expires_in', v_ttl,
                              'scope', array_to_string(v_asked, ' '));
end
$$;

-- Who a bearer token acts for: the merchant's code and role (to SET ROLE to) when the token is known,
-- unexpired, of a live client and holds the scope the operation needs; and which API client's request
-- limit (db/procedures/240_http_limits.sql) the request counts against. One lookup of the token.
-- PL/pgSQL so that the checks run first, always: a join the planner could start from elsewhere would
-- answer an unknown token with no row and no error.
create or replace function gateway.authenticate_client(p_token text, p_scope text)
returns table (merchant text, db_role text, default_product text, client_id text, requests_per_second integer)
language plpgsql stable security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_scopes text[];
begin
    select m.code, m.db_role, c.default_product, c.client_id, c.requests_per_second, t.scopes
    into merchant, db_role, default_product, client_id, requests_per_second, v_scopes
    from cp.api_token t
    join cp.api_client c on c.client_id = t.client_id and c.revoked_at is null
    join cp.merchant m on m.merchant_id = c.merchant_id
    where t.token_sha256 = pg_catalog.sha256(pg_catalog.convert_to(coalesce(p_token, ''), 'UTF8'))
      and t.expires_at > clock_timestamp();
    if not found then
        perform cp.fail('CP111', 'the access token is missing, invalid, expired or revoked');
    end if;
    if p_scope is not null and not (p_scope = any (v_scopes)) then
        perform cp.fail('CP112', format('the access token lacks scope %s', left(p_scope, 64)));
    end if;
    return next;
end
$$;

-- gateway.authenticate_client without the client: who a bearer token acts for.
create or replace function gateway.authenticate(p_token text, p_scope text)
returns table (merchant text, db_role text, default_product text)
language plpgsql stable security definer
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    return query select a.merchant, a.db_role, a.default_product
                 from gateway.authenticate_client(p_token, p_scope) a;
end
$$;

-- A decimal amount in major units (a JSON number, exact) as minor units of the currency; more decimals
-- than the currency has, or an amount that is not a positive bigint of minor units, is refused.
create or replace function cp.minor_units(p_amount jsonb, p_currency text) returns bigint
language plpgsql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_minor numeric;
begin
    if jsonb_typeof(p_amount) is distinct from 'number' then
        perform cp.fail('CP113', 'amount must be a number');
    end if;
    -- A JSON number is a numeric in jsonb: no binary float on the way. Its exponent is checked before
    -- the multiplication, so 1e100000 costs nothing.
    if length(split_part(p_amount::text, '.', 1)) > 19 then
        perform cp.fail('CP113', format('amount %s is out of range', left(p_amount::text, 32)));
    end if;
    v_minor := p_amount::text::numeric * power(10::numeric, cp.currency_exponent(p_currency));
    if v_minor <> trunc(v_minor) then
        perform cp.fail('CP113', format('amount %s has more decimals than %s has (%s)', left(p_amount::text, 32),
                                        p_currency, cp.currency_exponent(p_currency)));
    end if;
    if v_minor <= 0 or v_minor > 9223372036854775807 then
        perform cp.fail('CP113', format('amount %s is out of range', left(p_amount::text, 32)));
    end if;
    return v_minor::bigint;
end
$$;

-- An amount as a CAMARA request carries it ({amount, currency}, amount a decimal in major units) in
-- minor units of the currency the payment is billed in: any other currency is CP008, before the
-- amount is read.
create or replace function cp.camara_amount(p_money jsonb, p_currency text) returns bigint
language plpgsql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    if (p_money->>'currency') is distinct from p_currency then
        perform cp.fail('CP008', format('currency %L is unknown or not authorized: this is billed in %s',
                                        left(p_money->>'currency', 8), p_currency));
    end if;
    return cp.minor_units(p_money->'amount', p_currency);
end
$$;

-- Minor units as the decimal number a CAMARA document carries: 300 GBP minor is 3.00.
-- (cp.currency_exponent lives in 095_notices.sql.)
create or replace function cp.major_units(p_amount_minor bigint, p_currency text) returns numeric
language plpgsql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_exponent integer := cp.currency_exponent(p_currency);
begin
    return round(p_amount_minor / power(10::numeric, v_exponent), v_exponent);
end
$$;

-- A procedure's status in CAMARA's words. A charge prepared in two steps is `reserved` (or
-- `pending_validation` while its PIN is awaited) until confirmed, and `cancelled` if cancelled.
create or replace function cp.camara_payment_status(p_proc cp.procedure) returns text
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select case
        when p_proc.metadata->'camara'->>'step' = 'cancelled' then 'cancelled'
        when p_proc.metadata->'camara'->>'step' in ('reserved', 'pending_validation') and p_proc.status = 'pending'
            then p_proc.metadata->'camara'->>'step'
        when p_proc.status in ('succeeded', 'partially_refunded', 'refunded') then 'succeeded'
        when p_proc.status = 'failed' then 'denied'
        else 'processing' end
$$;

-- A charge as CAMARA's Payment document: the amountTransaction the merchant sent (or, for a payment
-- made through the SQL API, one built from the procedure), the server's references and the status.
create or replace function cp.camara_payment(p_proc cp.procedure) returns jsonb
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select jsonb_strip_nulls(jsonb_build_object(
        'paymentId', p_proc.procedure_id::text,
        'paymentStatus', cp.camara_payment_status(p_proc),
        'paymentCreationDate', p_proc.created_at,
        'paymentDate', case when p_proc.status in ('succeeded', 'partially_refunded', 'refunded')
                            then p_proc.final_at end,
        'sink', p_proc.metadata->'camara'->>'sink',
        'amountTransaction', coalesce(p_proc.metadata->'camara'->'amountTransaction', jsonb_build_object(
                'referenceCode', 'cp-' || p_proc.procedure_id,
                'paymentAmount', jsonb_build_object('chargingInformation', jsonb_build_object(
                    'amount', cp.major_units(p_proc.amount_minor, p_proc.currency),
                    'currency', p_proc.currency,
                    'description', (select name from cp.product where product_id = p_proc.product_id)))))
            || jsonb_build_object(
                'phoneNumber', (select msisdn from cp.subscriber where subscriber_id = p_proc.subscriber_id),
                'resourceURL', '/carrier-billing/v0.5/payments/' || p_proc.procedure_id,
                'serverReferenceCode', 'cp-' || p_proc.procedure_id)))
$$;

-- The idempotency key of a CAMARA request: its clientCorrelator, else its referenceCode (a second
-- request with the same referenceCode and no clientCorrelator is a duplicate, CP114).
create or replace function cp.camara_request_key(p_merchant_id integer, p_transaction jsonb) returns text
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_key text;
begin
    if p_transaction ? 'clientCorrelator' then
        return 'camara:cc:' || (p_transaction->>'clientCorrelator');
    end if;
    v_key := 'camara:ref:' || (p_transaction->>'referenceCode');
    if exists (select 1 from cp.idempotency where merchant_id = p_merchant_id and idem_key = v_key) then
        perform cp.fail('CP114', format('a payment with referenceCode %L already exists',
                                        left(p_transaction->>'referenceCode', 64)));
    end if;
    return v_key;
end
$$;

-- What a CAMARA payment request (createPayment or preparePayment) charges: the subscriber's number
-- and carrier, the amount in minor units of the carrier's currency, the product
-- (chargingMetaData.productId, else serviceId, else the API client's default product) and the
-- request's idempotency key (cp.camara_request_key).
create or replace function cp.camara_charge_terms(p_merchant_id integer, p_transaction jsonb, p_default_product text,
                                                  out o_msisdn text, out o_product text, out o_amount_minor bigint,
                                                  out o_key text)
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_info jsonb := p_transaction->'paymentAmount'->'chargingInformation';
    v_meta jsonb := p_transaction->'paymentAmount'->'chargingMetaData';
begin
    if jsonb_typeof(p_transaction) is distinct from 'object' or jsonb_typeof(v_info) is distinct from 'object'
       or p_transaction->>'referenceCode' is null then
        perform cp.fail('CP080', 'amountTransaction with referenceCode and paymentAmount.chargingInformation is required');
    end if;
    if p_transaction->>'phoneNumber' is null then
        perform cp.fail('CP118', 'phoneNumber is required: the access token does not identify a subscriber');
    end if;
    o_msisdn := cp.normalize_msisdn(p_transaction->>'phoneNumber');
    o_amount_minor := cp.camara_amount(v_info, (cp.carrier_for_msisdn(o_msisdn)).currency);
    o_product := coalesce(v_meta->>'productId', v_meta->>'serviceId', p_default_product);
    if o_product is null then
        perform cp.fail('CP115', 'no product: set chargingMetaData.productId or give the API client a default product');
    end if;
    o_key := cp.camara_request_key(p_merchant_id, p_transaction);
end
$$;

-- CAMARA createPayment: a one-step charge (api.charge) of a request as received.
create or replace function api.create_payment(p_merchant text, p_request jsonb, p_default_product text default null)
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_tx jsonb := p_request->'amountTransaction';
    v_terms record := cp.camara_charge_terms(v_merchant.merchant_id, v_tx, p_default_product);
    v_charge jsonb;
begin
    v_charge := api.charge(p_merchant, v_terms.o_msisdn, v_terms.o_product, v_terms.o_key, v_terms.o_amount_minor,
                           jsonb_build_object('camara', jsonb_strip_nulls(jsonb_build_object(
                               'amountTransaction', v_tx, 'sink', p_request->>'sink'))));
    perform cp.register_sink((v_charge->>'id')::bigint, p_request);
    return cp.camara_payment(p) from cp.procedure p where p.procedure_id = (v_charge->>'id')::bigint;
end
$$;

-- An id as the text a path carries: a number of up to 18 digits, else null, so that an id that is not
-- a number is simply not found (never an error of its own, never a cast that fails).
create or replace function cp.path_id(p_id text) returns bigint
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select case when p_id ~ '^[0-9]{1,18}$' then p_id::bigint end
$$;

-- The merchant's charge with this id (as the text CAMARA's path carries), or CP040: an id that is not
-- a number, or another merchant's payment, is simply not found.
create or replace function cp.merchant_charge(p_merchant_id integer, p_payment_id text) returns cp.procedure
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_proc cp.procedure;
begin
    select * into v_proc from cp.procedure
    where procedure_id = cp.path_id(p_payment_id) and merchant_id = p_merchant_id and kind = 'charge';
    if not found then
        perform cp.fail('CP040', format('no payment %L', left(p_payment_id, 64)));
    end if;
    return v_proc;
end
$$;

-- CAMARA retrievePayment.
create or replace function api.read_payment(p_merchant text, p_payment_id text) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
begin
    return cp.camara_payment(cp.merchant_charge(v_merchant.merchant_id, p_payment_id));
end
$$;

-- The sub-merchant a CAMARA request named (chargingMetaData.merchantIdentifier of its paymentAmount or
-- refundAmount), as kept with the payment or refund: what retrievePayments and retrieveRefunds filter by.
create or replace function cp.camara_merchant_identifier(p_proc cp.procedure, p_amount_field text) returns text
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select p_proc.metadata->'camara'->'amountTransaction'->p_amount_field->'chargingMetaData'->>'merchantIdentifier'
$$;

-- One page of CAMARA documents (payments, or refunds when p_refunds) of the matching procedures,
-- newest or oldest first (cp.page_window), and how many match in all: {total, items, last_index}.
create or replace function cp.camara_page(p_procs cp.procedure[], p_refunds boolean, p_order text, p_page integer,
                                          p_per_page integer)
returns jsonb
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_window record := cp.page_window(p_order, p_page, p_per_page);
    v_items jsonb;
begin
    select coalesce(jsonb_agg(case when p_refunds then cp.camara_refund(x.p) else cp.camara_payment(x.p) end
                              order by x.ordinal), '[]'::jsonb)
    into v_items
    from (select m::cp.procedure as p, row_number() over (
                     order by case when v_window.o_order = 'asc' then m.created_at end,
                              case when v_window.o_order = 'desc' then m.created_at end desc,
                              case when v_window.o_order = 'asc' then m.procedure_id end,
                              m.procedure_id desc) as ordinal
          from unnest(p_procs) m) x
    where x.ordinal > v_window.o_skip and x.ordinal <= v_window.o_last;
    return jsonb_build_object('total', coalesce(cardinality(p_procs), 0), 'items', v_items,
                              'last_index', v_window.o_skip + jsonb_array_length(v_items));
end
$$;

-- Where a list's creation period ends, for retrievePayments and retrieveRefunds alike: now when only its
-- start is given; a start after the end is p_code, naming p_field's gte and lte.
create or replace function cp.creation_period_end(p_from timestamptz, p_to timestamptz, p_code text, p_field text)
returns timestamptz
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_to timestamptz := coalesce(p_to, case when p_from is not null then cp.clock_now() end);
begin
    if p_from > v_to then
        perform cp.fail(p_code, format('%s.gte %s is after %s.lte %s', p_field, p_from, p_field, v_to));
    end if;
    return v_to;
end
$$;

-- CAMARA retrievePayments: the merchant's charges created in a period (to: now when only from is
-- given), with the given CAMARA statuses, one page of them and how many match in all.
create or replace function api.list_payments(p_merchant text, p_from timestamptz default null,
                                             p_to timestamptz default null, p_statuses text[] default null,
                                             p_order text default 'desc', p_page integer default 1,
                                             p_per_page integer default 10, p_merchant_identifier text default null)
returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_to timestamptz := cp.creation_period_end(p_from, p_to, 'CP119', 'paymentCreationDate');
    v_page jsonb;
begin
    v_page := cp.camara_page(array(
        select p from cp.procedure p
        where p.merchant_id = v_merchant.merchant_id and p.kind = 'charge'
          and (p_from is null or p.created_at >= p_from) and (v_to is null or p.created_at <= v_to)
          and (p_statuses is null or cp.camara_payment_status(p) = any (p_statuses))
          and (p_merchant_identifier is null
               or cp.camara_merchant_identifier(p, 'paymentAmount') = p_merchant_identifier)), false, p_order, p_page,
        p_per_page);
    return jsonb_build_object('total', v_page->'total', 'payments', v_page->'items', 'last_index', v_page->'last_index');
end
$$;

-- A refund's status in CAMARA's words.
create or replace function cp.camara_refund_status(p_status cp.procedure_status) returns text
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select case p_status when 'succeeded' then 'succeeded' when 'failed' then 'denied' else 'processing' end
$$;

-- A refund as CAMARA's Refund document: what the merchant sent (or, for a refund made through the SQL
-- API, what it amounts to), its status and dates.
create or replace function cp.camara_refund(p_proc cp.procedure) returns jsonb
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select jsonb_strip_nulls(jsonb_build_object(
        'refundId', p_proc.procedure_id::text,
        'refundStatus', cp.camara_refund_status(p_proc.status),
        'refundCreationDate', p_proc.created_at,
        'refundDate', case when p_proc.status = 'succeeded' then p_proc.final_at end,
        'type', coalesce(p_proc.metadata->'camara'->>'type',
                         case when p_proc.amount_minor = parent.collected_minor then 'total' else 'partial' end),
        'reason', p_proc.metadata->>'reason',
        'sink', p_proc.metadata->'camara'->>'sink',
        'amountTransaction', coalesce(p_proc.metadata->'camara'->'amountTransaction', jsonb_build_object(
            'referenceCode', 'cp-' || p_proc.procedure_id,
            'refundAmount', jsonb_build_object('chargingInformation', jsonb_build_object(
                'amount', cp.major_units(p_proc.amount_minor, p_proc.currency), 'currency', p_proc.currency,
                'description', (select name from cp.product where product_id = p_proc.product_id)))))))
    from cp.procedure parent where parent.procedure_id = p_proc.parent_id
$$;

-- CAMARA createRefund: api.refund of the whole remaining amount (type total) or of
-- refundAmount.chargingInformation.amount (type partial, a decimal in the payment's currency).
-- Idempotency as api.create_payment: clientCorrelator, else referenceCode (a repeat is CP114).
create or replace function api.create_refund(p_merchant text, p_payment_id text, p_request jsonb) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_charge cp.procedure := cp.merchant_charge(v_merchant.merchant_id, p_payment_id);
    v_tx jsonb := p_request->'amountTransaction';
    v_info jsonb := p_request->'amountTransaction'->'refundAmount'->'chargingInformation';
    v_amount bigint;
    v_key text;
    v_refund jsonb;
begin
    if p_request->>'type' is null or p_request->>'type' not in ('total', 'partial')
       or jsonb_typeof(v_tx) is distinct from 'object' or v_tx->>'referenceCode' is null then
        perform cp.fail('CP080', 'type total or partial and amountTransaction with referenceCode are required');
    end if;
    if p_request->>'type' = 'partial' then
        if jsonb_typeof(v_info) is distinct from 'object' then
            perform cp.fail('CP080', 'a partial refund needs refundAmount.chargingInformation');
        end if;
        v_amount := cp.camara_amount(v_info, v_charge.currency);
    end if;
    v_key := case when v_tx ? 'clientCorrelator' then 'camara:refund:cc:' || (v_tx->>'clientCorrelator')
                  else 'camara:refund:ref:' || (v_tx->>'referenceCode') end;
    if not v_tx ? 'clientCorrelator'
       and exists (select 1 from cp.idempotency where merchant_id = v_merchant.merchant_id and idem_key = v_key) then
        perform cp.fail('CP114', format('a refund with referenceCode %L already exists', left(v_tx->>'referenceCode', 64)));
    end if;
    v_refund := api.refund(p_merchant, v_charge.procedure_id, v_key, v_amount, p_request->>'reason');
    -- What the merchant sent, kept with the refund to be shown as sent (api.refund keeps only the reason).
    update cp.procedure
    set metadata = metadata || jsonb_build_object('camara', jsonb_strip_nulls(jsonb_build_object(
        'type', p_request->>'type', 'amountTransaction', v_tx, 'sink', p_request->>'sink')))
    where procedure_id = (v_refund->>'id')::bigint and not metadata ? 'camara';
    perform cp.register_sink((v_refund->>'id')::bigint, p_request);
    return cp.camara_refund(p) from cp.procedure p where p.procedure_id = (v_refund->>'id')::bigint;
end
$$;

-- CAMARA retrieveRefund: a refund of the merchant's payment (anything else is CP040).
create or replace function api.read_refund(p_merchant text, p_payment_id text, p_refund_id text) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_charge cp.procedure := cp.merchant_charge(v_merchant.merchant_id, p_payment_id);
    v_refund cp.procedure;
begin
    select * into v_refund from cp.procedure
    where procedure_id = cp.path_id(p_refund_id) and parent_id = v_charge.procedure_id and kind = 'refund';
    if not found then
        perform cp.fail('CP040', format('no refund %L of payment %s', left(p_refund_id, 64), v_charge.procedure_id));
    end if;
    return cp.camara_refund(v_refund);
end
$$;

-- CAMARA retrieveRefunds: a payment's refunds created in a period, with the given statuses, one page
-- of them and how many match in all.
create or replace function api.list_refunds(p_merchant text, p_payment_id text, p_from timestamptz default null,
                                            p_to timestamptz default null, p_statuses text[] default null,
                                            p_order text default 'desc', p_page integer default 1,
                                            p_per_page integer default 10, p_merchant_identifier text default null)
returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_charge cp.procedure := cp.merchant_charge(v_merchant.merchant_id, p_payment_id);
    v_to timestamptz := cp.creation_period_end(p_from, p_to, 'CP121', 'refundCreationDate');
begin
    return cp.camara_page(array(
        select r from cp.procedure r
        where r.parent_id = v_charge.procedure_id and r.kind = 'refund'
          and (p_from is null or r.created_at >= p_from) and (v_to is null or r.created_at <= v_to)
          and (p_statuses is null or cp.camara_refund_status(r.status) = any (p_statuses))
          and (p_merchant_identifier is null
               or cp.camara_merchant_identifier(r, 'refundAmount') = p_merchant_identifier)), true, p_order, p_page,
        p_per_page);
end
$$;

-- CAMARA retrievePaymentRemainingAmount: what can still be refunded of a payment (collected minus
-- refunds succeeded or in progress, as api.refund counts it), in major units.
create or replace function api.read_remaining_amount(p_merchant text, p_payment_id text) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_charge cp.procedure := cp.merchant_charge(v_merchant.merchant_id, p_payment_id);
    v_remaining bigint;
begin
    select v_charge.collected_minor - coalesce(sum(amount_minor), 0) into v_remaining
    from cp.procedure
    where parent_id = v_charge.procedure_id and kind = 'refund' and status <> 'failed';
    return jsonb_build_object('amount', cp.major_units(greatest(v_remaining, 0), v_charge.currency),
                              'currency', v_charge.currency);
end
$$;

-- Remember where a CAMARA request wants its status changes (sink, checked like a webhook URL) and the
-- bearer credential it gave for them; the webhook dispatcher delivers them (cp.tg_procedure__notify_sink).
create or replace function cp.register_sink(p_procedure_id bigint, p_request jsonb) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    if p_request->>'sink' is null then
        return;
    end if;
    perform cp.assert_webhook_url(p_request->>'sink');
    insert into cp.notification_sink (procedure_id, sink, access_token, token_expires_at)
    values (p_procedure_id, p_request->>'sink', p_request->'sinkCredential'->>'accessToken',
            (p_request->'sinkCredential'->>'accessTokenExpiresUtc')::timestamptz)
    on conflict (procedure_id) do nothing;
end
$$;

-- The CloudEvent CAMARA's callbacks define for a payment or refund that reached a final state.
create or replace function cp.camara_event(p_proc cp.procedure) returns jsonb
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select jsonb_build_object(
        'id', pg_catalog.gen_random_uuid()::text,
        'source', 'carrierpay',
        'specversion', '1.0',
        'datacontenttype', 'application/json',
        'time', cp.clock_now(),
        'type', case
            when p_proc.kind = 'refund' then 'org.camaraproject.carrier-billing-refund.v0.refund-'
                 || case when p_proc.status = 'succeeded' then 'completed' else 'denied' end
            when p_proc.metadata->'camara'->>'step' = 'cancelled' then 'org.camaraproject.carrier-billing.v0.payment-cancelled'
            when p_proc.status = 'failed' then 'org.camaraproject.carrier-billing.v0.payment-denied'
            else 'org.camaraproject.carrier-billing.v0.payment-completed' end,
        'data', jsonb_strip_nulls(jsonb_build_object(
            'paymentId', coalesce(p_proc.parent_id, p_proc.procedure_id)::text,
            'refundId', case when p_proc.kind = 'refund' then p_proc.procedure_id::text end,
            'status', case when p_proc.status = 'failed' then 'failed' else 'succeeded' end,
            'description', case when p_proc.status = 'failed' then coalesce(p_proc.reason, 'failed')
                                else 'completed' end,
            'paymentDate', case when p_proc.kind = 'charge' and p_proc.status = 'succeeded' then p_proc.final_at end,
            'denialReason', case when p_proc.status = 'failed' then p_proc.reason end)))
$$;

-- ---------------------------------------------------------------- carrierpay's extensions
-- Subscriptions, consents and balance checks over HTTP, in CAMARA's conventions (camelCase, text ids,
-- decimal amounts, clientCorrelator idempotency), each a thin wrapper of the SQL API function.

-- A subscription as the HTTP API shows it.
create or replace function cp.subscription_resource(p_subscription_id bigint) returns jsonb
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select jsonb_strip_nulls(jsonb_build_object(
        'subscriptionId', s.subscription_id::text, 'status', s.status, 'plan', s.plan, 'productId', p.code,
        'phoneNumber', sb.msisdn, 'nextChargeDate', s.next_charge_at, 'paidThrough', s.paid_through,
        'cancelReason', s.cancel_reason, 'cancelledDate', s.cancelled_at, 'creationDate', s.created_at,
        'price', jsonb_build_object('amount', cp.major_units(pp.amount_minor, pp.currency), 'currency', pp.currency)))
    from cp.subscription s join cp.product p using (product_id) join cp.subscriber sb using (subscriber_id)
    join cp.price_point pp on pp.price_point_id = s.price_point_id
    where s.subscription_id = p_subscription_id
$$;

-- The merchant's subscription with this id (text, as a path carries it; the SQL API's bigint as text),
-- or CP050: another merchant's subscription is simply not found.
create or replace function cp.merchant_subscription(p_merchant_id integer, p_subscription_id text) returns bigint
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_id bigint;
begin
    select subscription_id into v_id from cp.subscription
    where subscription_id = cp.path_id(p_subscription_id) and merchant_id = p_merchant_id;
    if not found then
        perform cp.fail('CP050', format('no subscription %L', left(p_subscription_id, 64)));
    end if;
    return v_id;
end
$$;

-- What a response names for the PIN still to be given (preparePayment, a subscription): the opt-in to
-- validate, or nothing when none is wanted.
create or replace function cp.validation_info(p_optin_id text) returns jsonb
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select case when p_optin_id is null then '{}'::jsonb
                else jsonb_build_object('validationInfo', jsonb_build_object(
                         'action', 'validate', 'authorizationId', p_optin_id)) end
$$;

-- A subscriber's PIN for an opt-in, as the HTTP API's validate steps take it (validatePayment, a
-- consent's validate): api.confirm_optin, whose wrong PIN (counted all the same) is raised here as its
-- code (CP031, CP033, CP037) instead of answered.
create or replace function cp.confirm_pin(p_merchant text, p_optin_id bigint, p_code text) returns jsonb
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_answer jsonb := api.confirm_optin(p_merchant, p_optin_id, p_code);
begin
    if v_answer->>'status' <> 'confirmed' then
        perform cp.fail(coalesce(v_answer->'error'->>'code', 'CP031'),
                        format('invalid code (%s attempts left)', coalesce(v_answer->>'attempts_left', '0')));
    end if;
    return v_answer;
end
$$;

-- POST /carrierpay/v1/subscriptions: api.subscribe; a PIN opt-in, when the regulation wants one, is
-- named in validationInfo (confirm it with /consents/{authorizationId}/validate).
create or replace function api.create_subscription(p_merchant text, p_request jsonb) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_doc jsonb;
begin
    v_doc := api.subscribe(p_merchant, p_request->>'phoneNumber', p_request->>'productId', p_request->>'plan',
                           'ext:subscription:' || (p_request->>'clientCorrelator'));
    return cp.subscription_resource((v_doc->>'id')::bigint)
        || jsonb_build_object('existing', coalesce((v_doc->>'existing')::boolean, false))
        || cp.validation_info(v_doc->>'optin_id');
end
$$;

-- GET /carrierpay/v1/subscriptions/{id}.
create or replace function api.read_subscription(p_merchant text, p_subscription_id text) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
begin
    return cp.subscription_resource(cp.merchant_subscription(v_merchant.merchant_id, p_subscription_id));
end
$$;

-- GET /carrierpay/v1/subscriptions: a page of the merchant's subscriptions (newest first), with
-- the given statuses, and how many match.
create or replace function api.list_subscriptions(p_merchant text, p_statuses text[] default null,
                                                  p_page integer default 1, p_per_page integer default 10)
returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_window record := cp.page_window('desc', p_page, p_per_page);
    v_total bigint;
    v_items jsonb;
begin
    select count(*),
           coalesce(jsonb_agg(cp.subscription_resource(x.subscription_id) order by x.ordinal)
                        filter (where x.ordinal > v_window.o_skip and x.ordinal <= v_window.o_last), '[]'::jsonb)
    into v_total, v_items
    from (select s.subscription_id, row_number() over (order by s.created_at desc, s.subscription_id desc) as ordinal
          from cp.subscription s
          where s.merchant_id = v_merchant.merchant_id and (p_statuses is null or s.status::text = any (p_statuses))) x;
    return jsonb_build_object('total', v_total, 'items', v_items,
                              'last_index', v_window.o_skip + jsonb_array_length(v_items));
end
$$;

-- POST /carrierpay/v1/subscriptions/{id}/cancel: api.cancel_subscription now.
create or replace function api.stop_subscription(p_merchant text, p_subscription_id text, p_request jsonb default '{}')
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_id bigint := cp.merchant_subscription(v_merchant.merchant_id, p_subscription_id);
begin
    perform api.cancel_subscription(p_merchant, v_id, p_request->>'reason');
    return cp.subscription_resource(v_id);
end
$$;

-- POST /carrierpay/v1/consents: api.request_optin (a PIN to the subscriber for a purchase of a product).
create or replace function api.create_consent(p_merchant text, p_request jsonb) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_doc jsonb;
begin
    v_doc := api.request_optin(p_merchant, p_request->>'phoneNumber', p_request->>'productId',
                               'ext:consent:' || (p_request->>'clientCorrelator'));
    return jsonb_build_object('consentId', v_doc->>'id', 'status', v_doc->>'status', 'expiresAt', v_doc->'expires_at');
end
$$;

-- POST /carrierpay/v1/consents/{id}/validate: api.confirm_optin with the subscriber's PIN; a wrong
-- PIN is its code raised (CP031, CP033, CP037), the check counted all the same.
create or replace function api.validate_consent(p_merchant text, p_consent_id text, p_request jsonb) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_doc jsonb;
begin
    if cp.path_id(p_consent_id) is null then
        perform cp.fail('CP030', format('no consent %L', left(p_consent_id, 64)));
    end if;
    v_doc := cp.confirm_pin(p_merchant, cp.path_id(p_consent_id), p_request->>'code');
    return jsonb_strip_nulls(jsonb_build_object('consentId', p_consent_id, 'status', 'confirmed',
                                                'subscriptionId', v_doc->>'subscription_id'));
end
$$;

-- A balance check as the HTTP API shows it.
create or replace function cp.balance_check_resource(p_proc cp.procedure) returns jsonb
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select jsonb_strip_nulls(jsonb_build_object(
        'balanceCheckId', p_proc.procedure_id::text,
        'status', case p_proc.status when 'succeeded' then 'succeeded' when 'failed' then 'denied' else 'processing' end,
        'amount', jsonb_build_object('amount', cp.major_units(p_proc.amount_minor, p_proc.currency),
                                     'currency', p_proc.currency),
        'sufficient', (p_proc.result->>'sufficient')::boolean,
        'creationDate', p_proc.created_at))
$$;

-- POST /carrierpay/v1/balance-checks: api.check_balance of a decimal amount in the subscriber's currency.
create or replace function api.create_balance_check(p_merchant text, p_request jsonb) returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_carrier cp.carrier := cp.carrier_for_msisdn(cp.normalize_msisdn(p_request->>'phoneNumber'));
    v_doc jsonb;
begin
    v_doc := api.check_balance(p_merchant, p_request->>'phoneNumber',
                               cp.camara_amount(p_request->'amount', v_carrier.currency),
                               'ext:balance:' || (p_request->>'clientCorrelator'));
    return cp.balance_check_resource(p) from cp.procedure p where p.procedure_id = (v_doc->>'id')::bigint;
end
$$;

-- GET /carrierpay/v1/balance-checks/{id}.
create or replace function api.read_balance_check(p_merchant text, p_check_id text) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant := cp.authorize_merchant(p_merchant);
    v_proc cp.procedure;
begin
    select * into v_proc from cp.procedure
    where procedure_id = cp.path_id(p_check_id) and merchant_id = v_merchant.merchant_id and kind = 'balance_check';
    if not found then
        perform cp.fail('CP040', format('no balance check %L', left(p_check_id, 64)));
    end if;
    return cp.balance_check_resource(v_proc);
end
$$;
