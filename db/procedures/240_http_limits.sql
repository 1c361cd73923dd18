-- Request limits of the merchant HTTP API (docs/http-api.md#rate-limits): each API client's rate is data
-- here; the server counts requests in its own memory against it, so no row is written per request.

-- Who a bearer token acts for (gateway.authenticate's checks and answer) and which client's request
-- limit the request counts against. PL/pgSQL so that the checks run first, always: a join the planner
-- could start from the token's row would skip them for an unknown token and answer no row, no error.
create or replace function gateway.authenticate_client(p_token text, p_scope text)
returns table (merchant text, db_role text, default_product text, client_id text, requests_per_second integer)
language plpgsql stable security definer
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    select a.merchant, a.db_role, a.default_product into merchant, db_role, default_product
    from gateway.authenticate(p_token, p_scope) a;
    select t.client_id, c.requests_per_second into client_id, requests_per_second
    from cp.api_token t join cp.api_client c on c.client_id = t.client_id
    where t.token_sha256 = pg_catalog.sha256(pg_catalog.convert_to(coalesce(p_token, ''), 'UTF8'));
    return next;
end
$$;

-- An operator's setting of a client's request limit (null: the server's default); servers apply it to
-- tokens they authenticate from then on.
create or replace function admin.set_api_client_rate_limit(p_client_id text, p_requests_per_second integer)
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_client cp.api_client;
begin
    if p_requests_per_second is not null and p_requests_per_second not between 1 and 100000 then
        perform cp.fail('CP127', format('a request limit is 1 to 100000 requests per second, not %s',
                                        p_requests_per_second));
    end if;
    update cp.api_client set requests_per_second = p_requests_per_second where client_id = p_client_id
    returning * into v_client;
    if not found then
        perform cp.fail('CP116', format('unknown API client %L', left(p_client_id, 64)));
    end if;
    return jsonb_build_object('client_id', v_client.client_id, 'requests_per_second', v_client.requests_per_second);
end
$$;
