-- Request limits of the merchant HTTP API (docs/http-api.md#rate-limits): each API client's rate is data
-- here; gateway.authenticate_client hands it to the server with every authentication, and the server
-- counts requests in its own memory against it, so no row is written per request.

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
