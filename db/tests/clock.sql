-- The business clock: cp.clock_now() follows admin.set_clock / admin.advance_clock.
begin;
select plan(4);

select ok(abs(extract(epoch from cp.clock_now() - now())) < 1, 'clock starts at real time');

select admin.set_clock('2030-01-31 10:00+00');
select is(cp.clock_now(), '2030-01-31 10:00+00'::timestamptz, 'set_clock moves business time');

select is(admin.advance_clock(interval '1 day'), '2030-02-01 10:00+00'::timestamptz,
          'advance_clock moves it forward and returns the new time');

select admin.advance_clock(interval '-2 hours');
select is(cp.clock_now(), '2030-02-01 08:00+00'::timestamptz, 'the clock can be moved backwards');

select * from finish();
rollback;
