-- The business clock: cp.clock_now() follows admin.set_clock / admin.advance_clock / admin.hold_clock.
begin;
select plan(9);

select ok(abs(extract(epoch from cp.clock_now() - now())) < 1, 'clock starts at real time');

select admin.set_clock('2030-01-31 10:00+00');
select is(cp.clock_now(), '2030-01-31 10:00+00'::timestamptz, 'set_clock moves business time');

select is(admin.advance_clock(interval '1 day'), '2030-02-01 10:00+00'::timestamptz,
          'advance_clock moves it forward and returns the new time');

select admin.advance_clock(interval '-2 hours');
select is(cp.clock_now(), '2030-02-01 08:00+00'::timestamptz, 'the clock can be moved backwards');

select is(admin.hold_clock(), '2030-02-01 08:00+00'::timestamptz, 'hold_clock returns where time stands');
select isnt((select held_at from cp.clock_offset), null, 'a held clock records where it stands');
select is(admin.advance_clock(interval '30 minutes'), '2030-02-01 08:30+00'::timestamptz,
          'a held clock moves by advance_clock and stays held');
select admin.set_clock('2030-02-02 09:00+00');
select is(cp.clock_now(), '2030-02-02 09:00+00'::timestamptz, 'and by set_clock');
select is(admin.hold_clock(false), '2030-02-02 09:00+00'::timestamptz,
          'released, it runs on from where it stood');

select * from finish();
rollback;
