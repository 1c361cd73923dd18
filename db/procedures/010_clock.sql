-- The one clock. Every procedure reads time through cp.clock_now() so that tests and the demo
-- can move time (simulated days) without touching the server's real clock.

-- Current business time: the held time if the clock is held, else the transaction's timestamp
-- plus the configured offset.
-- Called many times per payment: no SET search_path (every name is qualified), because a SET
-- clause costs a GUC save/restore on every call; it is not SECURITY DEFINER.
-- It reads a table, so the planner cannot inline it, and in a select list it runs once a row (a few
-- microseconds each): a statement over a batch of rows (the statement triggers' event inserts) writes
-- `(select cp.clock_now())`, which runs once for the statement.
create or replace function cp.clock_now() returns timestamptz
language sql stable parallel safe
as $$
    select coalesce((select coalesce(c.held_at, pg_catalog.now() + c.offset_by) from cp.clock_offset c),
                    pg_catalog.now())
$$;

-- Move business time so that cp.clock_now() reads p_at; returns the new offset. A held clock
-- stays held, at p_at.
create or replace function admin.set_clock(p_at timestamptz) returns interval
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_offset interval := p_at - now();
begin
    insert into cp.clock_offset (singleton, offset_by) values (true, v_offset)
    on conflict (singleton) do update
        set offset_by = excluded.offset_by,
            held_at = case when cp.clock_offset.held_at is not null then p_at end;
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
    on conflict (singleton) do update
        set offset_by = cp.clock_offset.offset_by + p_by,
            held_at = cp.clock_offset.held_at + p_by;
    return cp.clock_now();
end
$$;

-- Hold business time where it stands (p_hold) or let it run on from there in real time; returns
-- the business time. A held clock moves only by admin.set_clock and admin.advance_clock, so a
-- demo left running shows the same state until someone moves it on purpose.
create or replace function admin.hold_clock(p_hold boolean default true) returns timestamptz
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_now timestamptz := cp.clock_now();
begin
    insert into cp.clock_offset (singleton, offset_by, held_at)
    values (true, v_now - now(), case when p_hold then v_now end)
    on conflict (singleton) do update
        set offset_by = v_now - now(), held_at = case when p_hold then v_now end;
    return v_now;
end
$$;
