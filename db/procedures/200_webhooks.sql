-- Merchant webhooks: the dispatcher claims due notifications, signs and posts them, and reports
-- back. Delivery is at least once; merchants deduplicate by the notification id.

-- Lease due notifications to a dispatcher: each comes with the URL and the merchant's secret, or, for
-- a CAMARA sink, the sink, its bearer credential and the CloudEvent to post.
create or replace function adapter.claim_notifications(p_limit integer, p_lease interval default interval '1 minute')
returns setof jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    return query
    with due as (
        select n.notification_id from cp.merchant_notification n
        where n.status = 'pending' and n.next_attempt_at <= cp.clock_now()
        order by n.next_attempt_at
        limit p_limit
        for update skip locked
    ), leased as (
        update cp.merchant_notification n set next_attempt_at = cp.clock_now() + p_lease
        from due where n.notification_id = due.notification_id
        returning n.*
    )
    select case when not l.to_sink then
               jsonb_build_object('notification_id', l.notification_id, 'kind', l.kind, 'url', m.webhook_url,
                                  'secret', m.webhook_secret, 'attempt', l.attempts + 1,
                                  'body', jsonb_build_object('id', l.notification_id, 'type', l.kind,
                                                             'created_at', l.created_at, 'data', l.payload))
           else
               -- A CAMARA sink: the CloudEvent as it is, with the bearer credential the request gave
               -- (while it is valid).
               jsonb_strip_nulls(jsonb_build_object(
                   'notification_id', l.notification_id, 'kind', l.kind, 'url', s.sink,
                   'secret', m.webhook_secret, 'attempt', l.attempts + 1, 'body', l.payload,
                   'content_type', 'application/cloudevents+json',
                   'bearer', case when s.token_expires_at is null or s.token_expires_at > now()
                                  then s.access_token end))
           end
    from leased l join cp.merchant m using (merchant_id)
    left join cp.notification_sink s on l.to_sink and s.procedure_id = l.procedure_id;
end
$$;

-- Record delivery results: [{"notification_id", "delivered": bool, "error"}]. Failures back off
-- exponentially (30 s doubling, at most 6 h) and give up after 15 attempts.
create or replace function adapter.complete_notifications(p_results jsonb) returns integer
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_rows integer;
begin
    update cp.merchant_notification n
    set attempts = n.attempts + 1,
        status = case when (r->>'delivered')::boolean then 'delivered'
                      when n.attempts + 1 >= 15 then 'failed' else 'pending' end,
        delivered_at = case when (r->>'delivered')::boolean then cp.clock_now() end,
        last_error = case when (r->>'delivered')::boolean then null else left(r->>'error', 500) end,
        next_attempt_at = cp.clock_now() + least(interval '6 hours', interval '30 seconds' * power(2, n.attempts))
    from jsonb_array_elements(p_results) r
    where n.notification_id = (r->>'notification_id')::bigint and n.status = 'pending';
    get diagnostics v_rows = row_count;
    return v_rows;
end
$$;


-- Raise unless a merchant's webhook URL is one the dispatcher may post a signed body to: https, or
-- plain http only where the operator allows it for this session or database
-- (carrierpay.webhook_allow_http = on), with a host and no user name or password in it. Where the
-- host points is checked by the dispatcher at every connection (docs/daemons.md).
create or replace function cp.assert_webhook_url(p_url text) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_scheme text := lower(substring(p_url from '^([A-Za-z][A-Za-z0-9+.-]*)://'));
    v_authority text := substring(p_url from '^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)');
begin
    if p_url is null then
        return;
    end if;
    if v_scheme is null or v_scheme not in ('https', 'http') then
        perform cp.fail('CP063', format('webhook URL %L... must start with https://', left(p_url, 24)));
    end if;
    if length(p_url) > 2048 or p_url ~ '[[:space:][:cntrl:]]' or coalesce(v_authority, '') in ('', ':')
       or v_authority ~ '^:' or strpos(v_authority, '@') > 0 then
        perform cp.fail('CP063', format('webhook URL %L... must be at most 2048 characters, name a host, and hold '
                                        'no spaces, user name or password', left(p_url, 24)));
    end if;
    if v_scheme = 'http'
       and lower(coalesce(pg_catalog.current_setting('carrierpay.webhook_allow_http', true), ''))
           not in ('on', 'true', 'yes', '1') then
        perform cp.fail('CP064', format('webhook URL %L... is plain http: use https (an operator may allow http '
                                        'with carrierpay.webhook_allow_http = on)', left(p_url, 24)));
    end if;
end
$$;

-- Add a signed-webhook notification for the merchant (sent by the webhook dispatcher), when it has a URL.
create or replace function cp.notify_merchant(p_merchant_id integer, p_kind text, p_payload jsonb,
                                              p_procedure_id bigint default null, p_subscription_id bigint default null)
returns void
language sql
set search_path = pg_catalog, cp, pg_temp
as $$
    insert into cp.merchant_notification (merchant_id, kind, procedure_id, subscription_id, payload,
                                          next_attempt_at, created_at)
    select p_merchant_id, p_kind, p_procedure_id, p_subscription_id, p_payload, cp.clock_now(), cp.clock_now()
    from cp.merchant m
    where m.merchant_id = p_merchant_id and m.webhook_url is not null
$$;

-- The signed-webhook notifications of a batch of payments (p_kind 'payment.succeeded' or
-- 'payment.failed'), for the merchants that have a URL.
create or replace function cp.notify_merchant_payments(p_procs cp.procedure[], p_kind text) returns void
language sql
set search_path = pg_catalog, cp, pg_temp
as $$
    insert into cp.merchant_notification (merchant_id, kind, procedure_id, subscription_id, payload,
                                          next_attempt_at, created_at)
    select p.merchant_id, p_kind, p.procedure_id, p.subscription_id, cp.procedure_document(p),
           cp.clock_now(), cp.clock_now()
    from unnest(p_procs) p
    join cp.merchant m on m.merchant_id = p.merchant_id and m.webhook_url is not null
    order by p.procedure_id
$$;
