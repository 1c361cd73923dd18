-- Which carrier bills a number (docs/carrier-spec.md, "Routes and number lookup"): a fresh number
-- lookup first (a ported number belongs to the network the lookup found), else the routes of the
-- number's range in priority order, skipping carriers that are disabled or down. A range whose carrier
-- says so is looked up before a purchase is charged: the charge is held until the answer routes it.

-- Whether a carrier is down now: its circuit breaker is open (db/procedures/130_breaker.sql), or a call of
-- it has been held as unreachable (nothing reached the carrier) for over a minute. New purchases are
-- then routed to the next route.
create or replace function cp.carrier_down(p_carrier_id integer) returns boolean
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select exists (select 1 from cp.carrier_breaker b where b.carrier_id = p_carrier_id and b.state = 'open')
        or exists (select 1 from cp.carrier_call c
                   where c.carrier_id = p_carrier_id and c.status = 'queued' and c.unreachable_since is not null
                     and c.unreachable_since < cp.clock_now() - interval '1 minute')
$$;

-- Every carrier that may bill this MSISDN, best first: the owner of the longest matching number range
-- (priority 0), then the secondary routes of any matching prefix (cp.carrier_route) by priority, longer
-- prefixes first among equals.
create or replace function cp.routes_for_msisdn(p_msisdn text)
returns table (carrier_id integer, priority integer, prefix text)
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    with prefixes as (select left(p_msisdn, n) as prefix from generate_series(2, length(p_msisdn)) n),
    owner as (select p.carrier_id, 0 as priority, p.prefix from cp.carrier_prefix p join prefixes using (prefix)
              order by length(p.prefix) desc limit 1),
    secondary as (select r.carrier_id, r.priority, r.prefix from cp.carrier_route r join prefixes using (prefix))
    select o.carrier_id, o.priority, o.prefix from owner o
    union all
    select s.carrier_id, s.priority, s.prefix from secondary s
     where s.carrier_id not in (select o.carrier_id from owner o)
$$;

-- Every carrier that may bill a subscriber of this network (a ported number, found by a lookup), best
-- first: the network's own carrier (priority 0), then the secondary routes (cp.carrier_route) whose prefix
-- covers one of its number ranges, by priority.
create or replace function cp.routes_for_network(p_carrier_id integer)
returns table (carrier_id integer, priority integer, prefix text)
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select p_carrier_id, 0, ''::text
    union all
    select * from (select distinct on (r.carrier_id) r.carrier_id, r.priority, r.prefix
                   from cp.carrier_route r
                   where r.carrier_id <> p_carrier_id
                     and exists (select 1 from cp.carrier_prefix p
                                 where p.carrier_id = p_carrier_id and starts_with(p.prefix, r.prefix))
                   order by r.carrier_id, r.priority, r.prefix) s
$$;

-- The first of these routes (carrier ids, best first) whose carrier is enabled and up; when every
-- enabled one is down, the best of them anyway (its calls wait until it is back); none enabled is CP070.
create or replace function cp.first_route(p_carriers integer[]) returns cp.carrier
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_carrier cp.carrier;
    v_fallback cp.carrier;
begin
    for v_carrier in
        select k.* from unnest(p_carriers) with ordinality as r(carrier_id, n) join cp.carrier k using (carrier_id)
        order by r.n
    loop
        continue when not v_carrier.enabled;
        if not cp.carrier_down(v_carrier.carrier_id) then
            return v_carrier;
        end if;
        v_fallback := coalesce(v_fallback, v_carrier);
    end loop;
    if v_fallback.carrier_id is null then
        select * into v_carrier from cp.carrier where carrier_id = p_carriers[1];
        perform cp.fail('CP070', format('carrier %s is disabled', v_carrier.code));
    end if;
    return v_fallback;
end
$$;

-- The carrier for a purchase by this MSISDN from its number range alone (no lookup): its routes in
-- priority order (cp.routes_for_msisdn, cp.first_route); no route is CP004.
create or replace function cp.route_by_prefix(p_msisdn text) returns cp.carrier
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_routes integer[];
begin
    select array_agg(r.carrier_id order by r.priority, length(r.prefix) desc) into v_routes
    from cp.routes_for_msisdn(p_msisdn) r;
    if v_routes is null then
        perform cp.fail('CP004', format('no known carrier serves %s (a number starting %s)',
                                        cp.mask_msisdn(p_msisdn), left(p_msisdn, 4)));
    end if;
    return cp.first_route(v_routes);
end
$$;

-- The carrier for a new purchase by this MSISDN. A fresh lookup decides for a ported number: the routes
-- of the network it found (cp.routes_for_network: its own carrier, then aggregators reaching it, with
-- failover), and one that found no network of ours is CP004; else the routes of its number range.
create or replace function cp.route_msisdn(p_msisdn text) returns cp.carrier
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_lookup cp.number_lookup;
begin
    select * into v_lookup from cp.number_lookup l where l.msisdn = p_msisdn and l.expires_at > cp.clock_now();
    if not found then
        return cp.route_by_prefix(p_msisdn);
    end if;
    if v_lookup.carrier_id is null then
        perform cp.fail('CP004', format('no known carrier serves %s (a number lookup found another network)',
                                        cp.mask_msisdn(p_msisdn)));
    end if;
    return cp.first_route(array(select r.carrier_id from cp.routes_for_network(v_lookup.carrier_id) r
                                order by r.priority, length(r.prefix) desc));
end
$$;

-- The carrier to ask before charging this MSISDN, or null to charge at once: the owner of its number
-- range asks for it (`operations.lookup.before_charge` in its spec), no answer for the number is fresh
-- (cp.number_lookup), and the owner is enabled and up (a lookup through a carrier that is down would
-- hold the purchase; the number range's routes decide instead).
create or replace function cp.lookup_before_charge(p_msisdn text) returns cp.carrier
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select k.* from cp.routes_for_msisdn(p_msisdn) r join cp.carrier k using (carrier_id)
    where r.priority = 0 and k.enabled
      and coalesce((k.spec #>> '{operations,lookup,before_charge}')::boolean, false)
      and not exists (select 1 from cp.number_lookup l where l.msisdn = p_msisdn and l.expires_at > cp.clock_now())
      and not cp.carrier_down(k.carrier_id)
$$;

-- Queue what a new purchase sends first: its charge, or, when its number must be looked up before it is
-- charged (cp.lookup_before_charge), a lookup call through the carrier the purchase was routed to by its
-- range; the charge is then held (pending, no charge call) until the answer routes it
-- (cp.route_held_charge). p_amount is the amount to charge.
create or replace function cp.queue_purchase(p_proc cp.procedure, p_amount bigint) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_msisdn text := (select msisdn from cp.subscriber where subscriber_id = p_proc.subscriber_id);
    v_asker cp.carrier := cp.lookup_before_charge(v_msisdn);
begin
    if v_asker.carrier_id is distinct from p_proc.carrier_id then
        perform cp.queue_call(p_proc.procedure_id, 'charge', cp.charge_params(p_proc, p_amount));
        return;
    end if;
    perform cp.queue_call(p_proc.procedure_id, 'lookup',
                          jsonb_build_object('msisdn', v_msisdn, 'holds_charge', true, 'amount_minor', p_amount));
    perform cp.emit_event('procedure', p_proc.procedure_id, 'held_for_lookup',
                          jsonb_build_object('carrier', v_asker.code));
end
$$;

-- A lookup call was answered (from cp.apply_call_result). An answer naming a network is kept
-- (adapter.record_number_lookup, for the lookup operation's ttl_s); anything else (a refusal, a timeout,
-- an unreachable carrier, an unreadable answer) is a failed lookup, never retried: the purchase it holds
-- must not wait. Then the held charge is routed and queued. Returns 'applied'.
create or replace function cp.lookup_answered(p_call cp.carrier_call, p_result jsonb) returns text
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_ok boolean := p_result->>'outcome' = 'succeeded' and coalesce(p_result->>'mcc', '') ~ '^[0-9]{3}$'
                    and coalesce(p_result->>'mnc', '') ~ '^[0-9]{2,3}$';
    v_reason text := case when v_ok then null
                          when p_result->>'outcome' = 'succeeded' then 'unknown'  -- no network in the answer
                          else coalesce(p_result->>'reason', p_result->>'outcome', 'unknown') end;
    v_ttl double precision;
begin
    delete from cp.call_queue where call_id = p_call.call_id;
    update cp.carrier_call
    set status = case when v_ok then 'done'::cp.call_status else 'failed' end,
        outcome = case when v_ok then 'succeeded' else 'failed' end, reason = v_reason,
        carrier_code = p_result->>'carrier_code', next_reconcile_at = null
    where call_id = p_call.call_id;
    if v_ok then
        select coalesce((k.spec #>> '{operations,lookup,ttl_s}')::float8, 86400) into v_ttl
        from cp.carrier k where k.carrier_id = p_call.carrier_id;
        perform adapter.record_number_lookup(p_call.params->>'msisdn', p_result->>'mcc', p_result->>'mnc',
                                             least(greatest(v_ttl, 1), 2592000)::integer);
    end if;
    if p_call.params->>'holds_charge' = 'true' then
        perform cp.route_held_charge(p_call.procedure_id, (p_call.params->>'amount_minor')::bigint, v_reason);
    end if;
    return 'applied';
end
$$;

-- Route and queue a charge held for its number lookup, once (a charge call already queued, or a
-- procedure already settled, leaves it as it is). p_failure null: the lookup answered, so the fresh
-- answer routes it (cp.route_msisdn, with its failover); a network none of ours fails the payment
-- `subscriber_invalid`. Otherwise the lookup failed for that reason and the number's range routes it
-- (cp.route_by_prefix), recorded as a `lookup_fallback` event. A charge moved to another carrier keeps
-- its amount and currency: that carrier must have a price point for them, else it fails `rejected`
-- (event `reroute_refused`).
create or replace function cp.route_held_charge(p_procedure_id bigint, p_amount bigint, p_failure text)
returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_proc cp.procedure;
    v_msisdn text;
    v_carrier cp.carrier;
    v_pp cp.price_point;
    v_refusal text;
begin
    select * into v_proc from cp.procedure where procedure_id = p_procedure_id for update;
    if v_proc.status not in ('pending', 'in_flight')
       or exists (select 1 from cp.carrier_call c where c.procedure_id = p_procedure_id and c.operation = 'charge') then
        return;
    end if;
    select msisdn into v_msisdn from cp.subscriber where subscriber_id = v_proc.subscriber_id;
    begin
        if p_failure is null then
            v_carrier := cp.route_msisdn(v_msisdn);
        else
            v_carrier := cp.route_by_prefix(v_msisdn);
            perform cp.emit_event('procedure', p_procedure_id, 'lookup_fallback',
                                  jsonb_build_object('reason', p_failure, 'carrier', v_carrier.code));
        end if;
        if v_carrier.carrier_id <> v_proc.carrier_id then
            v_pp := cp.price_point_for(v_proc.product_id, v_carrier.carrier_id, 'one_time', v_proc.amount_minor);
            if v_pp.currency <> v_proc.currency or v_pp.amount_minor <> v_proc.amount_minor then
                v_refusal := format('carrier %s bills %s %s for it', v_carrier.code, v_pp.amount_minor, v_pp.currency);
            end if;
        end if;
    exception when sqlstate 'CP004' then
        v_refusal := 'subscriber_invalid';
    when sqlstate 'CP006' or sqlstate 'CP007' or sqlstate 'CP070' then
        v_refusal := format('carrier %s cannot bill it: %s', v_carrier.code, left(sqlerrm, 120));
    end;
    if v_refusal is not null then
        perform cp.emit_event('procedure', p_procedure_id, 'reroute_refused',
                              jsonb_build_object('carrier', v_carrier.code, 'why', v_refusal));
        perform cp.fail_charges(array[p_procedure_id],
                                array[case when v_refusal = 'subscriber_invalid' then v_refusal else 'rejected' end]);
        return;
    end if;
    if v_carrier.carrier_id <> v_proc.carrier_id then
        perform cp.lock_subscriber(v_msisdn, v_carrier.carrier_id);
        update cp.procedure set carrier_id = v_carrier.carrier_id, price_point_id = v_pp.price_point_id,
                                variant = v_pp.variant
        where procedure_id = p_procedure_id returning * into v_proc;
        perform cp.emit_event('procedure', p_procedure_id, 'rerouted',
                              jsonb_build_object('carrier', v_carrier.code, 'lookup', p_failure is null));
    end if;
    perform cp.queue_call(p_procedure_id, 'charge', cp.charge_params(v_proc, p_amount));
end
$$;

-- Record a number lookup's answer (an HLR/MNP query through a carrier's `lookup` operation): the
-- network (MCC/MNC) serving the number now, kept for p_ttl_s seconds. The network maps to the enabled
-- carrier with that MCC/MNC; a network that is none of ours is kept too (CP004 until it expires).
create or replace function adapter.record_number_lookup(p_msisdn text, p_mcc text, p_mnc text, p_ttl_s integer)
returns jsonb
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_msisdn text := cp.normalize_msisdn(p_msisdn);
    v_carrier cp.carrier;
    v_row cp.number_lookup;
begin
    if p_mcc !~ '^[0-9]{3}$' or p_mnc !~ '^[0-9]{2,3}$' then
        perform cp.fail('CP080', format('MCC/MNC %s/%s is not a network code', left(p_mcc, 5), left(p_mnc, 5)));
    end if;
    if p_ttl_s is null or p_ttl_s not between 1 and 2592000 then
        perform cp.fail('CP080', format('lookup lifetime %s s must be between 1 s and 30 days', p_ttl_s));
    end if;
    select * into v_carrier from cp.carrier k where k.mcc = p_mcc and k.mnc = p_mnc
    order by k.enabled desc, k.carrier_id limit 1;
    insert into cp.number_lookup as l (msisdn, carrier_id, mcc, mnc, looked_up_at, expires_at)
    values (v_msisdn, v_carrier.carrier_id, p_mcc, p_mnc, cp.clock_now(), cp.clock_now() + make_interval(secs => p_ttl_s))
    on conflict (msisdn) do update set carrier_id = excluded.carrier_id, mcc = excluded.mcc, mnc = excluded.mnc,
                                       looked_up_at = excluded.looked_up_at, expires_at = excluded.expires_at
    returning * into v_row;
    return jsonb_build_object('msisdn', v_row.msisdn, 'carrier', v_carrier.code, 'mcc', v_row.mcc,
                              'mnc', v_row.mnc, 'expires_at', v_row.expires_at);
end
$$;
