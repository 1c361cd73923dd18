-- The one clock. Every procedure reads time through cp.clock_now() so that tests and the demo
-- can move time (simulated days) without touching the server's real clock.

-- Current business time: the transaction's timestamp plus the configured offset.
-- Called many times per payment: no SET search_path (every name is qualified), because a SET
-- clause costs a GUC save/restore on every call; it is not SECURITY DEFINER.
create or replace function cp.clock_now() returns timestamptz
language sql stable parallel safe
as $$
    select pg_catalog.now() + coalesce((select c.offset_by from cp.clock_offset c), interval '0')
$$;

-- Move business time so that cp.clock_now() reads p_at; returns the new offset.
create or replace function admin.set_clock(p_at timestamptz) returns interval
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_offset interval := p_at - now();
begin
    insert into cp.clock_offset (singleton, offset_by) values (true, v_offset)
    on conflict (singleton) do update set offset_by = excluded.offset_by;
    return v_offset;
end
$$;

-- Move business time forward (or back) by p_by; returns the new business time.
create or replace function admin.advance_clock(p_by interval) returns timestamptz
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    insert into cp.clock_offset (singleton, offset_by) values (true, p_by)
    on conflict (singleton) do update set offset_by = cp.clock_offset.offset_by + p_by;
    return cp.clock_now();
end
$$;

