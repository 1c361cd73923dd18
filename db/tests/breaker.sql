-- Circuit breakers, operator pauses and the rollups the scheduler folds.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(27);

create temp table charged (idem_key text primary key, id bigint not null);
create function pg_temp.charge(p_key text, p_merchant text default 'acme', p_product text default 'gems')
returns bigint language sql as $$
    insert into charged
    select p_key, (api.charge(p_merchant, '+2348020000' || lpad((abs(hashtext(p_key)) % 1000)::text, 3, '0'),
                              p_product, p_key)->>'id')::bigint
    returning id
$$;
create function pg_temp.probe() returns bigint language sql as $$
    select c.procedure_id from cp.carrier_call c
    where c.call_id = (select b.probe_call_id from cp.carrier_breaker b join cp.carrier k using (carrier_id)
                       where k.code = 'test_ng') $$;
create function pg_temp.id(p_key text) returns bigint language sql as $$ select id from charged where idem_key = p_key $$;

select lives_ok($$ select admin.set_breaker('test_ng', '{"min_calls": 3, "error_pct": 50, "window_s": 60,
                                                         "probe_interval_s": 10, "reset_after": 2}') $$,
                'thresholds are carrier data an operator sets');
select throws_ok($$ select admin.set_breaker('test_ng', '{"error_pct": 0}') $$, 'CP131', null, 'out of range');
select throws_ok($$ select admin.set_breaker('test_ng', '{"colour": 1}') $$, 'CP131', null, 'unknown setting');

-- Three timeouts out of four answers trip the breaker.
select pg_temp.charge('t' || i) from generate_series(1, 4) i;
select is((select count(*) from pg_temp.claim('test_ng')), 4::bigint, 'a closed breaker lets every call through');
select pg_temp.settle(pg_temp.id('t' || i),
                      case when i = 1 then 'succeeded' else 'unknown' end)
from generate_series(1, 4) i;
select is((select count(*) from sched.run_breakers() where carrier = 'test_ng' and state = 'open'), 1::bigint,
          'the scheduler trips it and says so');
select is((select state from report.carrier_breakers where carrier = 'test_ng'), 'open', 'open in the report');
select is((select trips from report.carrier_breakers where carrier = 'test_ng'), 1::bigint, 'one trip counted');
select is((select count(*) from cp.event where kind = 'breaker_tripped'), 1::bigint, 'the trip is an event');
select is((select count(*) from sched.run_breakers()), 0::bigint, 'judging again changes nothing');

-- Open: calls wait; a probe goes every probe interval.
select pg_temp.charge('h' || i) from generate_series(1, 3) i;
select is((select count(*) from pg_temp.claim('test_ng')), 0::bigint, 'an open breaker holds calls');
select is((select count(*) from pg_temp.claim('test_gb')), 0::bigint, 'other carriers are not affected (none queued)');
select admin.advance_clock('11 seconds');
select sched.run_breakers();
select is((select count(*) from pg_temp.claim('test_ng')), 1::bigint, 'one probe is let through');
select is((select count(*) from pg_temp.claim('test_ng')), 0::bigint, 'and only one');
select pg_temp.settle(pg_temp.probe(), 'succeeded');
select is((select count(*) from sched.run_breakers()), 0::bigint, 'one healthy probe is not enough');
select admin.advance_clock('11 seconds');
select sched.run_breakers();
select is((select count(*) from pg_temp.claim('test_ng')), 1::bigint, 'a second probe');
select pg_temp.settle(pg_temp.probe(), 'succeeded');
select is((select state from sched.run_breakers() where carrier = 'test_ng'), 'closed', 'two healthy probes reset it');
select is((select count(*) from cp.event where kind = 'breaker_reset'), 1::bigint, 'the reset is an event');
select is((select count(*) from pg_temp.claim('test_ng')), 1::bigint, 'the held call goes out');

-- Operator pauses.
select throws_ok($$ select admin.pause_sending('galaxy', 'acme') $$, 'CP130', null, 'unknown scope');
select throws_ok($$ select admin.pause_sending('merchant', 'nobody') $$, 'CP130', null, 'unknown merchant');
select ok(admin.pause_sending('merchant', 'acme', 'fraud check'), 'pause a merchant');
select pg_temp.charge('p1'), pg_temp.charge('p2', 'other', 'coins');
select is((select array_agg((d->>'procedure_id')::bigint) from pg_temp.claim('test_ng') d),
          array[pg_temp.id('p2')], 'only the other merchant''s call is sent');
select ok(admin.resume_sending('merchant', 'acme'), 'resume');
select is((select count(*) from pg_temp.claim('test_ng')), 1::bigint, 'the paused call goes out');
select ok(admin.pause_sending('carrier', 'test_ng'), 'pause a carrier');
select pg_temp.charge('p3');
select is((select count(*) from pg_temp.claim('test_ng')), 0::bigint, 'a paused carrier sends nothing');

-- Rollups: what settled is folded once; what is unsettled is folded when it settles.
select sched.fold_rollups();
select admin.advance_clock('3 minutes');  -- the unknown calls are passed, as stragglers
select sched.fold_rollups();
select sched.fold_rollups();
select is((select sum(calls) from report.hourly_calls where carrier = 'test_ng' and operation = 'charge'),
          (select count(*) from cp.carrier_call c join cp.carrier k using (carrier_id)
           where k.code = 'test_ng' and c.operation = 'charge' and c.status in ('done', 'failed'))::numeric,
          'every settled charge call is in the hourly rollup, once');

select * from finish();
rollback;
