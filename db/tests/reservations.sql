-- Two-step carriers: a reservation its charge can no longer confirm is released by one call of the
-- carrier's cancel operation (failed for good, given up when our window closes, cancelled by the
-- merchant), never twice, never after the carrier let it lapse, never when the charge captured it.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(31);

select pg_temp.onboard_ng('{"code": "two_ng", "name": "Two-step NG", "mnc": "40", "number_ranges": ["+234807"],
  "operations": {"charge": {"pattern": "sync", "safe_to_repeat": true,
                            "two_step": {"reserve": "reserve", "cancel": "release", "expiry_s": 900}},
                 "release": {"pattern": "sync", "safe_to_repeat": true}, "send_sms": {"pattern": "sync"}}}');
select admin.add_price_point('acme', 'gems', 'one_time', 5000, 'NGN', 'gems_100', p_carrier => 'two_ng');

-- The adapter's answer for the call of a procedure: p_ref names the reservation its reserve step made.
create function pg_temp.answer(p_procedure_id bigint, p_outcome text, p_reason text, p_ref text) returns jsonb
language sql as $$
    select adapter.complete_calls(jsonb_agg(jsonb_build_object(
        'call_id', c.call_id, 'lease', c.lease_no, 'outcome', p_outcome, 'reason', p_reason,
        'reservation', jsonb_build_object('carrier_ref', p_ref))))
    from cp.carrier_call c where c.procedure_id = p_procedure_id and c.operation = 'charge' and c.status = 'leased'
$$;
create function pg_temp.reservation(p_ref text) returns cp.reservation
language sql as $$ select * from cp.reservation where carrier_ref = p_ref $$;
create function pg_temp.releases(p_procedure_id bigint) returns integer
language sql as $$ select count(*)::int from cp.carrier_call where procedure_id = p_procedure_id and operation = 'release' $$;

-- 1. The confirmation failed for good: one release, of that reservation.
create temp table p as select 'k1' as k, (api.charge('acme', '+2348070000001', 'gems', 'k1')->>'id')::bigint as id;
select count(*) from pg_temp.claim('two_ng');
select pg_temp.answer((select id from p where k = 'k1'), 'failed', 'rejected', 'R1');
select is((pg_temp.reservation('R1')).status, 'releasing', 'a refused confirmation releases its reservation');
select is((select params->'original'->>'carrier_ref' from cp.carrier_call
           where call_id = (pg_temp.reservation('R1')).release_call_id), 'R1',
          'with the carrier''s cancel operation, naming the reservation');
select is((select status::text from cp.procedure where procedure_id = (select id from p where k = 'k1')), 'failed',
          'the payment failed');
-- The adapter sends the same batch again (it could not tell whether it committed).
select adapter.complete_calls(jsonb_build_array(jsonb_build_object(
    'call_id', (pg_temp.reservation('R1')).call_id, 'lease', 1, 'outcome', 'failed', 'reason', 'rejected',
    'reservation', jsonb_build_object('carrier_ref', 'R1'))));
select is(pg_temp.releases((select id from p where k = 'k1')), 1, 'a repeated answer queues no second release');
select is(cp.release_reservation((pg_temp.reservation('R1')).reservation_id, 'again'), null::bigint,
          'nor does asking again');
select is((select count(*)::int from pg_temp.claim('two_ng') d where d->>'operation' = 'release'), 1,
          'the release is handed to the adapter');
select is(adapter.complete_calls(jsonb_build_array(jsonb_build_object(
    'call_id', (pg_temp.reservation('R1')).release_call_id, 'lease', 1, 'outcome', 'succeeded')))->>'applied', '1',
    'its answer is recorded');
select is((pg_temp.reservation('R1')).status, 'released', 'the reservation is released');
select is((select status::text from cp.procedure where procedure_id = (select id from p where k = 'k1')), 'failed',
          'and the payment stays failed');

-- 2. A confirmed charge captured its reservation: nothing to release.
insert into p select 'k2', (api.charge('acme', '+2348070000002', 'gems', 'k2')->>'id')::bigint;
select count(*) from pg_temp.claim('two_ng');
select pg_temp.answer((select id from p where k = 'k2'), 'succeeded', null, 'R2');
select is((pg_temp.reservation('R2')).status, 'captured', 'a succeeded charge captured its reservation');
select is(pg_temp.releases((select id from p where k = 'k2')), 0, 'and releases nothing');

-- 3. Throttled: the same call goes back to the queue and keeps its reservation; when our window to confirm
--    closes (half the carrier's 900 s) while it still waits, it is given up and the reservation released.
insert into p select 'k3', (api.charge('acme', '+2348070000003', 'gems', 'k3')->>'id')::bigint;
select count(*) from pg_temp.claim('two_ng');
select pg_temp.answer((select id from p where k = 'k3'), 'failed', 'throttled', 'R3');
select is((pg_temp.reservation('R3')).status, 'held', 'a throttled confirmation keeps its reservation');
select admin.advance_clock(interval '8 minutes');
select is(adapter.expire_reservations()->>'given_up', '1', 'our confirmation window closed: given up');
select is((select reason from cp.procedure where procedure_id = (select id from p where k = 'k3')), 'expired',
          'the payment failed, expired');
select is((pg_temp.reservation('R3')).status, 'releasing', 'and its reservation is being released');

-- 4. A call requeued after its lease ran out may have been confirmed before its adapter died: it is sent
--    again, never given up; its reservation lapses at the carrier's expiry, and a capture still counts.
insert into p select 'k4', (api.charge('acme', '+2348070000004', 'gems', 'k4')->>'id')::bigint;
select count(*) from pg_temp.claim('two_ng') d where d->>'operation' = 'charge';
select pg_temp.answer((select id from p where k = 'k4'), 'failed', 'throttled', 'R4');
select admin.advance_clock(interval '10 seconds');
select count(*) from pg_temp.claim('two_ng') d where d->>'operation' = 'charge';
select admin.advance_clock(interval '2 minutes');
select adapter.expire_leases();
select admin.advance_clock(interval '6 minutes');
select is(adapter.expire_reservations()->>'given_up', '0', 'a requeued call whose last lease went unanswered is kept');
select is((select status::text from cp.carrier_call c where c.call_id = (pg_temp.reservation('R4')).call_id), 'queued',
          'on the queue, to be sent again');
select admin.advance_clock(interval '10 minutes');
select adapter.expire_reservations();
select is((pg_temp.reservation('R4')).status, 'lapsed', 'past the carrier''s expiry it has lapsed');
select count(*) from pg_temp.claim('two_ng') d where d->>'operation' = 'charge';
select pg_temp.answer((select id from p where k = 'k4'), 'succeeded', null, 'R4');
select is((pg_temp.reservation('R4')).status, 'captured', 'a capture answered late still captured it');
select is(pg_temp.releases((select id from p where k = 'k4')), 0, 'and nothing was released');

-- 5. A release still waiting when the carrier's expiry passes is not sent: the carrier released it.
insert into p select 'k5', (api.charge('acme', '+2348070000005', 'gems', 'k5')->>'id')::bigint;
select count(*) from pg_temp.claim('two_ng') d where d->>'operation' = 'charge';
select pg_temp.answer((select id from p where k = 'k5'), 'failed', 'barred', 'R5');
select admin.advance_clock(interval '16 minutes');
select adapter.expire_reservations();
select is((pg_temp.reservation('R5')).status, 'lapsed', 'a release not sent before the carrier''s expiry is dropped');
select is((select status::text from cp.carrier_call where call_id = (pg_temp.reservation('R5')).release_call_id),
          'failed', 'its call is closed unsent');
select is((select count(*)::int from pg_temp.claim('two_ng') d
           where (d->>'call_id')::bigint = (pg_temp.reservation('R5')).release_call_id), 0, 'and never handed out');

-- 6. The merchant cancels a confirmed two-step payment whose confirmation has not reached the carrier.
create temp table prepared as
select api.prepare_payment('acme', '{"amountTransaction": {"phoneNumber": "+2348070000006", "referenceCode": "p-6",
    "paymentAmount": {"chargingInformation": {"amount": 50, "currency": "NGN", "description": "gems"}}}}',
    'gems') as d;
select api.confirm_payment('acme', (select d->>'paymentId' from prepared), '{"phoneNumber": "+2348070000006"}');
select throws_ok($$select api.cancel_payment('acme', (select d->>'paymentId' from prepared),
                                             '{"phoneNumber": "+2348070000006"}')$$,
                 'CP124', null, 'a confirmed payment holding no reservation cannot be cancelled');
select count(*) from pg_temp.claim('two_ng') d where d->>'operation' = 'charge';
select pg_temp.answer((select (d->>'paymentId')::bigint from prepared), 'failed', 'throttled', 'R6');
select is(api.cancel_payment('acme', (select d->>'paymentId' from prepared), '{"phoneNumber": "+2348070000006"}')
          ->>'paymentStatus', 'cancelled', 'while its confirmation waits on the queue, a cancel ends it');
select is((pg_temp.reservation('R6')).status, 'releasing', 'and releases the reservation');
select is((select reason from cp.procedure where procedure_id = (select (d->>'paymentId')::bigint from prepared)),
          'cancelled', 'reason cancelled');

-- 7. A release the carrier turned away with a temporary fault gets a new attempt; a refused one is final.
insert into p select 'k8', (api.charge('acme', '+2348070000008', 'gems', 'k8')->>'id')::bigint;
select count(*) from pg_temp.claim('two_ng') d where d->>'operation' = 'charge';
select pg_temp.answer((select id from p where k = 'k8'), 'failed', 'rejected', 'R8');
select count(*) from pg_temp.claim('two_ng') d where d->>'operation' = 'release';
select adapter.complete_calls(jsonb_build_array(jsonb_build_object(
    'call_id', (pg_temp.reservation('R8')).release_call_id, 'lease', 1, 'outcome', 'failed', 'reason', 'transient')));
select is((select string_agg(status::text || ':' || attempt, ',' order by call_id) from cp.carrier_call
           where procedure_id = (select id from p where k = 'k8') and operation = 'release'), 'failed:1,queued:2',
          'a transient fault: a new attempt of the release');
select is((select attempt from cp.carrier_call where call_id = (pg_temp.reservation('R8')).release_call_id), 2,
          'which is now the reservation''s release');
select admin.advance_clock(interval '1 minute');
select count(*) from pg_temp.claim('two_ng') d where d->>'operation' = 'release';
select adapter.complete_calls(jsonb_build_array(jsonb_build_object(
    'call_id', (pg_temp.reservation('R8')).release_call_id, 'lease', 1, 'outcome', 'failed', 'reason', 'rejected')));
select is((pg_temp.reservation('R8')).status || '/' || (pg_temp.reservation('R8')).release_reason, 'not_released/rejected',
          'a refused release is final');

-- 8. A carrier that is not two-step: a reservation in its answer is ignored.
select pg_temp.settle((api.charge('acme', '+2348020000077', 'gems', 'k7')->>'id')::bigint, 'failed', 'rejected',
                      '{"reservation": {"carrier_ref": "R7"}}');
select is((select count(*)::int from cp.reservation where carrier_ref = 'R7'), 0,
          'only a two-step operation''s reservation is kept');

select * from finish();
rollback;
