-- The operator queue: a charge no reconciliation route can settle (no status query, no result file) is
-- listed after the carrier's limit of turns, 3 unless its spec says otherwise, and settled from there.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(8);

select api.charge('acme', '+2348020000001', 'gems', 'k1');
select pg_temp.claim('test_ng');
select pg_temp.settle((select max(procedure_id) from cp.procedure), 'unknown');
create temp table the_call as select call_id from cp.carrier_call where operation = 'charge';
-- Quiet for longer than twice the carrier's timeout (real time), so reconciliation may take it.
update cp.carrier_call set sent_at = clock_timestamp() - interval '1 hour' where call_id = (select call_id from the_call);
select is(cp.settlement_route(c), 'wait', 'test_ng has no status query and no result file: the charge waits')
  from cp.carrier_call c where call_id = (select call_id from the_call);

create function pg_temp.turn() returns void
language sql as $$
    update cp.carrier_call set next_reconcile_at = cp.clock_now() where call_id = (select call_id from the_call);
    select count(*) from adapter.claim_reconciliations('test_ng', 10);
$$;
select pg_temp.turn();
select pg_temp.turn();
select is((select count(*)::int from report.calls_needing_operator), 0, 'two turns: not yet an operator''s');
select pg_temp.turn();
select is((select call_id from report.calls_needing_operator), (select call_id from the_call),
          'three turns: listed for an operator by default');

update cp.carrier set spec = spec || '{"reconciliation": {"operator_after_turns": 5}}' where code = 'test_ng';
select is((select count(*)::int from report.calls_needing_operator), 0, 'a carrier may give reconciliation longer');
update cp.carrier set spec = spec || '{"reconciliation": {"operator_after_turns": 1}}' where code = 'test_ng';
select is((select count(*)::int from report.calls_needing_operator), 1, 'or shorter');
update cp.carrier set spec = spec || '{"reconciliation": {"operator_after_turns": "soon"}}' where code = 'test_ng';
select is(cp.operator_after_turns((select spec from cp.carrier where code = 'test_ng')), 3,
          'a value that is not a number means the default');

select is((admin.settle_call((select call_id from the_call), 'succeeded',
                             'carrier portal shows the charge'))->>'procedure_status', 'succeeded',
          'the operator settles it; the payment follows');
select is((select count(*)::int from report.calls_needing_operator), 0, 'and the queue is empty');

select * from finish();
rollback;
