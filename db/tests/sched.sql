-- Scheduling: period arithmetic across month ends and DST, windows, quiet hours, budgets, reminders.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(36);

-- Monthly periods count from the anchor: 31 January renews on the last day of February, then 31 March.
select is(cp.period_start('2030-01-31 10:00', 'monthly', 1, 'UTC'), '2030-02-28 10:00+00'::timestamptz, 'Jan 31 + 1 month');
select is(cp.period_start('2032-01-31 10:00', 'monthly', 1, 'UTC'), '2032-02-29 10:00+00'::timestamptz, 'leap February');
select is(cp.period_start('2030-01-31 10:00', 'monthly', 2, 'UTC'), '2030-03-31 10:00+00'::timestamptz,
          'the day of month comes back after February');
select is(cp.period_start('2030-01-15 09:00', 'weekly', 3, 'UTC'), '2030-02-05 09:00+00'::timestamptz, 'weekly');
-- Europe/London springs forward on 2030-03-31: a daily period keeps local 09:00, so it lasts 23 h.
select is(cp.period_start('2030-03-30 09:00', 'daily', 1, 'Europe/London') -
          cp.period_start('2030-03-30 09:00', 'daily', 0, 'Europe/London'), interval '23 hours', 'spring-forward day');
select is(cp.period_start('2030-10-26 09:00', 'daily', 1, 'Europe/London') -
          cp.period_start('2030-10-26 09:00', 'daily', 0, 'Europe/London'), interval '25 hours', 'fall-back day');
select is(cp.period_start('2030-03-30 09:00', 'daily', 1, 'Asia/Kolkata'), '2030-03-31 03:30+00'::timestamptz,
          'half-hour offset zone');
select is(cp.period_start('2030-03-30 09:00', 'daily', 1, 'Africa/Lagos'), '2030-03-31 08:00+00'::timestamptz,
          'no-DST zone');

-- Windows, including ones that wrap midnight.
select ok(cp.in_window('10:00', '08:00-22:00'), 'inside a day window');
select ok(not cp.in_window('23:00', '08:00-22:00'), 'outside a day window');
select ok(cp.in_window('23:30', '22:00-06:00') and cp.in_window('05:00', '22:00-06:00'), 'wrapping window');

-- ZA quiet hours: Sunday all day, Saturday before 09:00 and after 13:00, weekdays 20:00-08:00.
select ok(not cp.sms_allowed_at((select rules from cp.regulation where code = 'ZA'), '2030-03-03 12:00'), 'ZA Sunday');
select ok(not cp.sms_allowed_at((select rules from cp.regulation where code = 'ZA'), '2030-03-04 21:00'), 'ZA Monday night');
select ok(cp.sms_allowed_at((select rules from cp.regulation where code = 'ZA'), '2030-03-04 10:00'), 'ZA Monday morning');
select is(cp.next_sms_time((select rules from cp.regulation where code = 'ZA'), 'Africa/Johannesburg',
                           '2030-03-02 14:00+02'), '2030-03-04 08:00+02'::timestamptz,
          'a Saturday-afternoon SMS waits until Monday 08:00');
select is(cp.next_sms_time((select rules from cp.regulation where code = 'IN'), 'Asia/Kolkata',
                           '2030-03-04 22:10+05:30'), '2030-03-05 09:00+05:30'::timestamptz,
          'an Indian commercial SMS after 21:00 waits until 09:00');

-- The shared per-second budget never grants more than the carrier's tps within one second.
update cp.carrier set tps = 5 where code = 'test_gb';
select is(cp.take_budget((select carrier_id from cp.carrier where code = 'test_gb'), 3), 3, 'budget grants what is asked');
select is(cp.take_budget((select carrier_id from cp.carrier where code = 'test_gb'), 3), 2, 'then only what is left');
select is(cp.take_budget((select carrier_id from cp.carrier where code = 'test_gb'), 3), 0, 'and nothing once the second is used');
select is(cp.budget_left((select carrier_id from cp.carrier where code = 'test_gb')), 0, 'budget_left sees it used');

-- A charge-less carrier window: run_due moves due renewals to the next allowed hour instead of charging.
select set_config('cp.tests.sub', (api.subscribe('acme', '+2348020000077', 'club', 'daily', 'w1'))->>'optin_id', true);
update cp.optin set status = 'confirmed';
select cp.activate_subscription((select subscription_id from cp.subscription));
select pg_temp.claim('test_ng');
select pg_temp.settle((select max(procedure_id) from cp.procedure where kind = 'charge'), 'succeeded');
update cp.carrier set spec = spec || '{"charging_hours": "08:00-09:00"}' where code = 'test_ng';
select admin.set_clock((select next_charge_at + interval '1 minute' from cp.subscription));
select is(sched.due_left(), 1::bigint, 'due_left counts the renewal that has come due');
update cp.carrier set enabled = false where code = 'test_ng';
select is(sched.due_left(), 0::bigint, 'but not on a disabled carrier (run_due passes it by)');
update cp.carrier set enabled = true where code = 'test_ng';
select is(sched.run_due(100), 0, 'no charge outside the charging window');
select ok((select (next_charge_at at time zone 'Africa/Lagos')::time = '08:00' from cp.subscription),
          'the renewal moved to the window''s first hour');
select is(sched.due_left(), 0::bigint, 'a renewal moved to its next slot is no longer due');
select ok(not sched.renewal_due('cancelled', cp.clock_now() - interval '1 day')
          and not sched.renewal_due('pending_optin', cp.clock_now() - interval '1 day')
          and sched.renewal_due('suspended', cp.clock_now())
          and not sched.renewal_due('active', cp.clock_now() + interval '1 second'),
          'due: a live status (suspended included) and a next charge time that has come');

-- Charging hours hold charges on the queue (adapter.claim_calls), however they came to be ready.
update cp.carrier set spec = spec || '{"charging_hours": "08:00-22:00"}' where code = 'test_ng';
select admin.set_clock('2030-03-10 19:50+00');  -- 20:50 in Lagos
create temp table late as select (api.charge('acme', '+2348020000080', 'gems', 'late-1')->>'id')::bigint as id;
select admin.set_clock('2030-03-10 21:02+00');  -- 22:02: the window closed before an adapter came
select is((select count(*)::int from pg_temp.claim('test_ng') d where (d->>'procedure_id')::bigint = (select id from late)),
          0, 'a charge still queued at closing is not handed out');
select is((select c.status::text || ' ' || p.status || ' ' || q.available_at
           from cp.carrier_call c join cp.call_queue q using (call_id) join cp.procedure p using (procedure_id)
           where c.procedure_id = (select id from late)),
          'queued pending 2030-03-11 07:00:00+00', 'it waits on the queue for the opening, 08:00 local');
select cp.queue_sms((select subscriber_id from cp.subscriber where msisdn = '+2348020000080'), 'night', 'reply');
select is((select count(*)::int from pg_temp.claim('test_ng') d
           where d->>'operation' = 'send_sms' and d->>'msisdn' = '+2348020000080'), 1,
          'an SMS is not held by charging hours');
select admin.set_clock('2030-03-11 07:00+00');
select is((select count(*)::int from pg_temp.claim('test_ng') d where (d->>'procedure_id')::bigint = (select id from late)),
          1, 'at the opening the charge is handed out');

-- A PIN confirmed at 22:02: the first charge and the first period wait for 08:00.
select admin.set_clock('2030-03-11 20:55+00');
create temp table night as select api.subscribe('acme', '+2348020000081', 'club', 'daily', 'night-1') as d;
select admin.set_clock('2030-03-11 21:02+00');
select api.confirm_optin('acme', (select (d->>'optin_id')::bigint from night), pg_temp.pin('+2348020000081'));
select is((select q.available_at from cp.call_queue q join cp.carrier_call c using (call_id)
           join cp.procedure p using (procedure_id) where p.subscription_id = (select (d->>'id')::bigint from night)),
          '2030-03-12 07:00+00'::timestamptz, 'the first charge is queued for the next opening');
select is((select anchor_local from cp.subscription where subscription_id = (select (d->>'id')::bigint from night)),
          '2030-03-12 08:00'::timestamp, 'and the periods count from it');
select is((select count(*)::int from pg_temp.claim('test_ng') d join cp.procedure p
           on p.procedure_id = (d->>'procedure_id')::bigint
           where p.subscription_id = (select (d->>'id')::bigint from night)), 0, 'no adapter gets it before');

-- A subscriber with a zone of its own is judged in it, whatever the carrier's clock says.
insert into cp.subscriber (msisdn, carrier_id, timezone)
select '+2348020000082', carrier_id, 'Pacific/Kiritimati' from cp.carrier where code = 'test_ng'
union all
select '+2348020000083', carrier_id, 'America/New_York' from cp.carrier where code = 'test_ng';
select admin.set_clock('2030-03-12 19:00+00');  -- Lagos 20:00, Kiritimati 09:00 the next day
create temp table kiri as select (api.charge('acme', '+2348020000082', 'gems', 'kiri-1')->>'id')::bigint as id;
select admin.set_clock('2030-03-13 10:00+00');  -- Lagos 11:00 (open), Kiritimati 00:00 (closed)
select is((select count(*)::int from pg_temp.claim('test_ng') d where (d->>'procedure_id')::bigint = (select id from kiri)),
          0, 'open for the carrier, closed for the subscriber: held');
select is((select q.available_at from cp.call_queue q join cp.carrier_call c using (call_id)
           where c.procedure_id = (select id from kiri)), '2030-03-13 18:00+00'::timestamptz,
          'until 08:00 in the subscriber''s zone');
select admin.set_clock('2030-03-13 13:00+00');  -- New York 09:00
create temp table ny as select (api.charge('acme', '+2348020000083', 'gems', 'ny-1')->>'id')::bigint as id;
select admin.set_clock('2030-03-13 21:30+00');  -- Lagos 22:30 (closed), New York 17:30, Kiritimati 11:30
select is((select count(*)::int from pg_temp.claim('test_ng') d
           where (d->>'procedure_id')::bigint in ((select id from ny), (select id from kiri))), 2,
          'closed for the carrier, open for the subscribers: handed out');

select * from finish();
rollback;
