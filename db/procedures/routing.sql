-- Which carrier bills a number (docs/carrier-spec.md, "Routes and number lookup"): a fresh number
-- lookup first (a ported number belongs to the network the lookup found), else the routes of the
-- number's range in priority order, skipping carriers that are disabled or down.

-- Whether a carrier is down now (its breaker open): a call of it has been held as unreachable (nothing
-- reached the carrier) for over a minute. New purchases are then routed to the range's next route.
create or replace function cp.carrier_down(p_carrier_id integer) returns boolean
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select exists (select 1 from cp.carrier_call c
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

-- The carrier for a new purchase by this MSISDN. A fresh lookup decides for a ported number (and one
-- that found no network of ours is CP004); else the first route whose carrier is enabled and up; when
-- every enabled one is down, the best of them anyway (its calls wait until it is back); none enabled
-- is CP070, no route CP004.
create or replace function cp.route_msisdn(p_msisdn text) returns cp.carrier
language plpgsql stable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_lookup cp.number_lookup;
    v_carrier cp.carrier;
    v_fallback cp.carrier;
    v_any boolean := false;
begin
    select * into v_lookup from cp.number_lookup l where l.msisdn = p_msisdn and l.expires_at > cp.clock_now();
    if found then
        if v_lookup.carrier_id is null then
            perform cp.fail('CP004', format('no known carrier serves %s (a number lookup found another network)',
                                            cp.mask_msisdn(p_msisdn)));
        end if;
        select * into v_carrier from cp.carrier k where k.carrier_id = v_lookup.carrier_id;
        if not v_carrier.enabled then
            perform cp.fail('CP070', format('carrier %s is disabled', v_carrier.code));
        end if;
        return v_carrier;
    end if;
    for v_carrier in
        select k.* from cp.routes_for_msisdn(p_msisdn) r join cp.carrier k on k.carrier_id = r.carrier_id
        order by r.priority, length(r.prefix) desc
    loop
        v_any := true;
        continue when not v_carrier.enabled;
        if not cp.carrier_down(v_carrier.carrier_id) then
            return v_carrier;
        end if;
        v_fallback := coalesce(v_fallback, v_carrier);
    end loop;
    if not v_any then
        perform cp.fail('CP004', format('no known carrier serves %s (a number starting %s)',
                                        cp.mask_msisdn(p_msisdn), left(p_msisdn, 4)));
    end if;
    if v_fallback.carrier_id is null then
        select k.* into v_carrier from cp.routes_for_msisdn(p_msisdn) r join cp.carrier k on k.carrier_id = r.carrier_id
        order by r.priority, length(r.prefix) desc limit 1;
        perform cp.fail('CP070', format('carrier %s is disabled', v_carrier.code));
    end if;
    return v_fallback;
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
