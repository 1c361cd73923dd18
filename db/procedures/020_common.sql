-- Shared building blocks: merchant authorization, events, subscriber lookup (errors and who is
-- calling: 005_callers.sql).

-- The merchant a code names, or CP001: how every operator and gateway function given a merchant's
-- code finds it (cp.authorize_merchant, for the merchants' own calls, also checks who is asking).
create or replace function cp.named_merchant(p_code text) returns cp.merchant
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant;
begin
    select * into v_merchant from cp.merchant where code = p_code;
    if not found then
        perform cp.fail('CP001', format('unknown merchant %L', left(p_code, 64)));
    end if;
    return v_merchant;
end
$$;

-- The carrier a code names, or CP070: how every function given a carrier's code finds it.
create or replace function cp.named_carrier(p_code text) returns cp.carrier
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_carrier cp.carrier;
begin
    select * into v_carrier from cp.carrier where code = p_code;
    if not found then
        perform cp.fail('CP070', format('unknown carrier %L', left(p_code, 64)));
    end if;
    return v_carrier;
end
$$;

-- The merchant whose code is given, after checking that the calling role may act for it.
create or replace function cp.authorize_merchant(p_merchant text) returns cp.merchant
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_merchant cp.merchant;
    v_caller name := cp.calling_role();
begin
    select * into v_merchant from cp.merchant where code = p_merchant;
    if not found then
        perform cp.fail('CP001', format('unknown merchant %L', left(p_merchant, 64)));
    end if;
    if not cp.may_act_for(v_caller, v_merchant.db_role) then
        perform cp.fail('CP002', format('role %s may not act for merchant %L', v_caller, left(p_merchant, 64)));
    end if;
    return v_merchant;
end
$$;

-- Append a state-change event to the outbox (same transaction as the change).
-- Several per payment: no SET search_path (names are qualified; not SECURITY DEFINER), which
-- would cost a GUC save/restore on every call.
create or replace function cp.emit_event(
    p_aggregate_type text, p_aggregate_id bigint, p_kind text, p_payload jsonb default '{}'
) returns void
language sql
as $$
    insert into cp.event (aggregate_type, aggregate_id, kind, occurred_at, payload)
    values (p_aggregate_type, p_aggregate_id, p_kind, cp.clock_now(), coalesce(p_payload, '{}'))
$$;

-- Validate an MSISDN as E.164 (+ and 7 to 15 digits, no leading zero).
create or replace function cp.normalize_msisdn(p_msisdn text) returns text
language plpgsql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_clean text := regexp_replace(coalesce(p_msisdn, ''), '[\s\-().]', '', 'g');
begin
    if v_clean ~ '^00[1-9]' then
        v_clean := '+' || substr(v_clean, 3);
    end if;
    if v_clean !~ '^\+[1-9][0-9]{6,14}$' then
        perform cp.fail('CP005', format('malformed MSISDN %s: expected E.164 such as +447700900123',
                                        cp.mask_msisdn(p_msisdn)));
    end if;
    return v_clean;
end
$$;

-- An MSISDN (or whatever a caller sent as one) as messages may show it: the server log keeps
-- error messages, and a phone number is personal data. Only the last four digits are kept.
create or replace function cp.mask_msisdn(p_msisdn text) returns text
language sql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
    select case when p_msisdn is null then 'null'
                else '***' || right(regexp_replace(left(p_msisdn, 64), '[^0-9]', '', 'g'), 4) end
$$;

-- A caller's p_metadata: a JSON object of at most 4 KB serialized (null counts as empty), else CP080.
create or replace function cp.check_metadata(p_metadata jsonb) returns jsonb
language plpgsql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    if p_metadata is null then
        return '{}'::jsonb;
    end if;
    if jsonb_typeof(p_metadata) <> 'object' then
        perform cp.fail('CP080', format('p_metadata must be a JSON object, not %s', jsonb_typeof(p_metadata)));
    end if;
    if octet_length(p_metadata::text) > 4096 then
        perform cp.fail('CP080', format('p_metadata is %s bytes serialized; at most 4096 are kept',
                                        octet_length(p_metadata::text)));
    end if;
    return p_metadata;
end
$$;

-- A free-text argument (a reason) of at most p_max characters, else CP080.
create or replace function cp.check_length(p_name text, p_value text, p_max integer) returns text
language plpgsql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    if length(p_value) > p_max then
        perform cp.fail('CP080', format('%s is %s characters long; at most %s are allowed', p_name, length(p_value),
                                        p_max));
    end if;
    return p_value;
end
$$;

-- An integer member of a caller's JSON document (a JSON number or a string of digits), or null when
-- absent; anything else, or a value outside bigint, is CP080 rather than a cast error.
create or replace function cp.json_bigint(p_doc jsonb, p_key text) returns bigint
language plpgsql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_value jsonb := p_doc -> p_key;
    v_text text;
begin
    if v_value is null or jsonb_typeof(v_value) = 'null' then
        return null;
    end if;
    v_text := case jsonb_typeof(v_value) when 'number' then v_value::text when 'string' then v_value #>> '{}' end;
    if v_text is null or v_text !~ '^-?[0-9]{1,19}$'
       or v_text::numeric not between -9223372036854775808 and 9223372036854775807 then
        perform cp.fail('CP080', format('%s must be an integer, not %s', left(p_key, 64),
                                        left(coalesce(v_text, jsonb_typeof(v_value)), 64)));
    end if;
    return v_text::bigint;
end
$$;

-- The carrier that bills a new purchase by this MSISDN: a fresh number lookup, else the routes of its
-- range (cp.route_msisdn, db/procedures/070_routing.sql).
create or replace function cp.carrier_for_msisdn(p_msisdn text) returns cp.carrier
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    return cp.route_msisdn(p_msisdn);
end
$$;

-- The subscriber for an MSISDN, created on first sight, locked for the rest of the transaction
-- so that concurrent purchases by the same person see each other's spend.
create or replace function cp.lock_subscriber(p_msisdn text, p_carrier_id integer) returns cp.subscriber
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_subscriber cp.subscriber;
begin
    insert into cp.subscriber (msisdn, carrier_id, created_at)
    values (p_msisdn, p_carrier_id, cp.clock_now())
    on conflict (msisdn) do nothing
    returning * into v_subscriber;
    if found then
        return v_subscriber;  -- new: no one else sees it before we commit, so no lock to take
    end if;
    select * into v_subscriber from cp.subscriber where msisdn = p_msisdn for update;
    if v_subscriber.carrier_id <> p_carrier_id then
        -- The number moved to another carrier (porting): follow the current range.
        update cp.subscriber set carrier_id = p_carrier_id where subscriber_id = v_subscriber.subscriber_id
        returning * into v_subscriber;
        update cp.subscription set carrier_id = p_carrier_id where subscriber_id = v_subscriber.subscriber_id;
    end if;
    return v_subscriber;
end
$$;

-- A merchant's product by code, or CP003.
create or replace function cp.merchant_product(p_merchant_id integer, p_code text) returns cp.product
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_product cp.product;
begin
    select * into v_product from cp.product where merchant_id = p_merchant_id and code = p_code;
    if not found then
        perform cp.fail('CP003', format('unknown product %L', left(p_code, 64)));
    end if;
    return v_product;
end
$$;

-- The subscriber's local timezone: their own, else their carrier's.
-- On the payment and renewal paths: no SET search_path (names are qualified; not SECURITY DEFINER).
create or replace function cp.subscriber_timezone(p_subscriber_id bigint) returns text
language sql stable
as $$
    select coalesce(s.timezone, c.timezone)
    from cp.subscriber s join cp.carrier c using (carrier_id)
    where s.subscriber_id = p_subscriber_id
$$;

-- Idempotency: returns the stored response of an earlier call with this key, or null when this
-- call is the first. Concurrent calls with one key take turns on a transaction-scoped advisory lock
-- (no row, no WAL): the second waits for the first to commit, then finds its response here. The
-- key's row is written once, with the response, by cp.idempotency_finish.
create or replace function cp.idempotency_begin(
    p_merchant_id integer, p_key text, p_operation text, p_request jsonb
) returns jsonb
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_hash text := md5(p_operation || ':' || p_request::text);
    v_row cp.idempotency;
begin
    if p_key is null or length(p_key) = 0 or length(p_key) > 200 then
        perform cp.fail('CP080', 'an idempotency key of 1 to 200 characters is required');
    end if;
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(p_merchant_id || ':' || p_key, 1709));
    select * into v_row from cp.idempotency where merchant_id = p_merchant_id and idem_key = p_key;
    if not found then
        -- What cp.idempotency_finish stores for this key (this transaction only).
        perform pg_catalog.set_config('carrierpay.idempotency', pg_catalog.jsonb_build_object(
            'merchant_id', p_merchant_id, 'key', p_key, 'operation', p_operation, 'hash', v_hash)::text, true);
        return null;
    end if;
    if v_row.operation <> p_operation or v_row.request_hash <> v_hash then
        perform cp.fail('CP010', format('idempotency key %L was already used with different parameters',
                                        left(p_key, 64)));
    end if;
    return v_row.response;
end
$$;

-- Idempotency: remember the response of the first call with this key, as cp.idempotency_begin of
-- the same transaction left it. A key another transaction took meanwhile (possible only when the
-- caller's snapshot predates its commit: REPEATABLE READ) is a serialization failure: the caller
-- retries and gets the stored response.
create or replace function cp.idempotency_finish(p_merchant_id integer, p_key text, p_response jsonb)
returns jsonb
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_begun jsonb := nullif(pg_catalog.current_setting('carrierpay.idempotency', true), '')::jsonb;
begin
    if v_begun is null or (v_begun->>'merchant_id')::integer is distinct from p_merchant_id
       or v_begun->>'key' is distinct from p_key then
        perform cp.fail('CP080', 'idempotency_finish without its idempotency_begin');
    end if;
    insert into cp.idempotency (merchant_id, idem_key, operation, request_hash, response)
    values (p_merchant_id, p_key, v_begun->>'operation', v_begun->>'hash', p_response)
    on conflict do nothing;
    if not found then
        raise exception using errcode = '40001',
            message = format('idempotency key %L was taken by a concurrent call; retry', left(p_key, 64));
    end if;
    perform pg_catalog.set_config('carrierpay.idempotency', '', true);
    return p_response;
end
$$;

-- Rows that payment rows refer to are never deleted. The high-volume tables (procedures, carrier
-- calls, the call queue, journals, ledger entries, entitlements, notifications, logs) carry no
-- foreign keys: each check would lock its parent row, a WAL record per reference and a MultiXact
-- when concurrent payments share a merchant or carrier. Their references hold instead because the
-- procedures write a child only after reading its parent in the same transaction, and because no
-- parent ever goes away: configuration is retired by status, history by archiving whole time ranges.
-- Each parent table's trigger file declares `_050_never_deleted` and `_051_never_truncated` with
-- this function (journals are immutable already: db/triggers/journal.sql refuses with CP062);
-- report.dangling_references lists any row whose parent is missing, and must always be empty.
create or replace function cp.tg_parent__never_deleted() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    perform cp.fail('CP150', format('rows of %s are never deleted: payments refer to them (retire it by its status '
                                    'instead)', tg_table_name));
    return null;
end
$$;
