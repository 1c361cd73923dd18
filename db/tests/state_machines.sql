-- The three state machines: every transition not drawn in docs/architecture.md raises CP060, whoever writes the row;
-- a procedure is born pending; the consent log never changes.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(31);

-- Something to hang rows on: a subscriber, a procedure and a call from a real charge.
select api.charge('acme', '+2348020000001', 'gems', 'k1');
select api.subscribe('acme', '+2348020000002', 'club', 'daily', 'k2');

-- Try every (from, to) pair of a machine on a throw-away row brought to state `from` (a procedure is
-- born pending and walked there along legal transitions; the others are inserted in it), and report
-- what the UPDATE to `to` did: 'ok' or the SQLSTATE it raised.
create function pg_temp.try_transitions(p_machine text)
returns table (from_status text, to_status text, result text)
language plpgsql as $$
declare
    v_states text[] := case p_machine
        when 'procedure' then enum_range(null::cp.procedure_status)::text[]
        when 'subscription' then enum_range(null::cp.subscription_status)::text[]
        else enum_range(null::cp.call_status)::text[] end;
    v_proc cp.procedure := (select p from cp.procedure p where kind = 'charge' limit 1);
    v_sub cp.subscription := (select s from cp.subscription s limit 1);
    v_id bigint;
    v_step text;
begin
    -- Throw-away rows for another subscriber: one live subscription per subscriber and product.
    v_sub.subscriber_id := v_proc.subscriber_id;
    foreach from_status in array v_states loop
        foreach to_status in array v_states loop
            continue when from_status = to_status;
            begin
                if p_machine = 'procedure' then
                    insert into cp.procedure (kind, merchant_id, subscriber_id, carrier_id, amount_minor,
                                              currency, created_at, updated_at)
                    values ('charge', v_proc.merchant_id, v_proc.subscriber_id, v_proc.carrier_id, 100,
                            v_proc.currency, now(), now())
                    returning procedure_id into v_id;
                    foreach v_step in array case from_status
                        when 'pending' then array[]::text[]
                        when 'in_flight' then array['in_flight']
                        when 'failed' then array['failed']
                        when 'unknown' then array['in_flight', 'unknown']
                        when 'succeeded' then array['in_flight', 'succeeded']
                        when 'partially_refunded' then array['in_flight', 'succeeded', 'partially_refunded']
                        when 'refunded' then array['in_flight', 'succeeded', 'refunded'] end loop
                        update cp.procedure set status = v_step::cp.procedure_status where procedure_id = v_id;
                    end loop;
                    update cp.procedure set status = to_status::cp.procedure_status where procedure_id = v_id;
                elsif p_machine = 'subscription' then
                    insert into cp.subscription (merchant_id, subscriber_id, carrier_id, product_id, plan, status,
                                                 price_point_id, status_since)
                    values (v_sub.merchant_id, v_sub.subscriber_id, v_sub.carrier_id, v_sub.product_id, v_sub.plan,
                            from_status::cp.subscription_status, v_sub.price_point_id, now())
                    returning subscription_id into v_id;
                    update cp.subscription set status = to_status::cp.subscription_status
                    where subscription_id = v_id;
                else
                    v_id := nextval(pg_get_serial_sequence('cp.carrier_call', 'call_id'));
                    insert into cp.carrier_call (call_id, procedure_id, carrier_id, operation, safe_to_repeat, status,
                                                 correlator, created_at)
                    overriding system value
                    values (v_id, v_proc.procedure_id, v_proc.carrier_id, 'charge', false,
                            from_status::cp.call_status, 'cp-' || v_id, now());
                    update cp.carrier_call set status = to_status::cp.call_status where call_id = v_id;
                end if;
                raise exception using errcode = 'CPZZZ', message = 'undo';  -- roll the row back either way
            exception when others then
                result := case when sqlstate = 'CPZZZ' then 'ok' else sqlstate end;
            end;
            return next;
        end loop;
    end loop;
end
$$;

-- A machine's three checks: its legal transitions are exactly p_legal (a query of (from, to) pairs),
-- every other one raises CP060, and there are p_illegal of those (p_why says what the count rests on).
create function pg_temp.check_machine(p_machine text, p_legal text, p_illegal integer, p_why text default null)
returns setof text
language plpgsql as $$
declare
    v_name text := replace(p_machine, '_', ' ');
begin
    return next set_eq(format('select from_status, to_status from pg_temp.try_transitions(%L) where result = %L',
                              p_machine, 'ok'),
                       p_legal, v_name || ': the legal transitions are exactly those of the design');
    return next is((select array_agg(distinct result) from pg_temp.try_transitions(p_machine) where result <> 'ok'),
                   array['CP060'], v_name || ': every other transition raises CP060');
    return next is((select count(*)::int from pg_temp.try_transitions(p_machine) where result <> 'ok'), p_illegal,
                   format('%s: %s illegal transitions checked', v_name, p_illegal)
                   || coalesce(' (' || p_why || ')', ''));
end
$$;

-- The legal transitions, exactly.
select pg_temp.check_machine('procedure',
                             $$ values ('pending', 'in_flight'), ('pending', 'failed'),
                                       ('in_flight', 'succeeded'), ('in_flight', 'failed'), ('in_flight', 'unknown'),
                                       ('unknown', 'succeeded'), ('unknown', 'failed'),
                                       ('succeeded', 'partially_refunded'), ('succeeded', 'refunded'),
                                       ('partially_refunded', 'refunded') $$,
                             32);
select pg_temp.check_machine('subscription',
                             $$ values ('pending_optin', 'active'), ('pending_optin', 'cancelled'),
                                       ('active', 'retrying'), ('active', 'cancelled'),
                                       ('retrying', 'active'), ('retrying', 'grace'), ('retrying', 'cancelled'),
                                       ('grace', 'active'), ('grace', 'suspended'), ('grace', 'cancelled'),
                                       ('suspended', 'active'), ('suspended', 'cancelled') $$,
                             18, 'nothing leaves cancelled');
select pg_temp.check_machine('carrier_call',
                             $$ values ('queued', 'leased'), ('queued', 'failed'),
                                       ('leased', 'queued'), ('leased', 'awaiting_result'), ('leased', 'done'),
                                       ('leased', 'failed'), ('leased', 'unknown'),
                                       ('awaiting_result', 'done'), ('awaiting_result', 'failed'),
                                       ('awaiting_result', 'unknown'),
                                       ('unknown', 'done'), ('unknown', 'failed') $$,
                             18);

-- A few by hand, on the real rows, as the owner: the triggers hold even for direct UPDATEs.
select throws_ok($$ update cp.procedure set status = 'succeeded' where kind = 'charge' $$, 'CP060', null,
                 'a pending charge cannot jump to succeeded');
select throws_ok($$ update cp.carrier_call set status = 'done' where operation = 'charge' $$, 'CP060', null,
                 'a queued call cannot be done without being leased');
select throws_ok($$ update cp.subscription set status = 'retrying' $$, 'CP060', null,
                 'a pending subscription cannot be retrying');
select pg_temp.claim('test_ng');
select pg_temp.settle((select procedure_id from cp.procedure where kind = 'charge' and subscription_id is null),
                      'succeeded');
select throws_ok($$ update cp.procedure set status = 'in_flight' where kind = 'charge' and status = 'succeeded' $$,
                 'CP060', null, 'a succeeded charge cannot go back in flight');
select throws_ok($$ update cp.carrier_call set status = 'queued' where status = 'done' $$, 'CP060', null,
                 'a done call cannot be requeued');
select lives_ok($$ update cp.procedure set status = 'refunded' where kind = 'charge' and status = 'succeeded' $$,
                'succeeded -> refunded is legal');
select is((select payload->>'from' || ' -> ' || (payload->>'to') from cp.event
           where aggregate_type = 'procedure' order by event_id desc limit 1), 'succeeded -> refunded',
          'a legal change writes its event');
select lives_ok($$ update cp.subscription set status = 'cancelled' $$, 'any subscription can be cancelled');
select throws_ok($$ update cp.subscription set status = 'active' $$, 'CP060', null, 'cancelled is final');
select throws_ok($$ select cp.assert_transition('procedure', 'refunded', 'succeeded') $$, 'CP060',
                 'illegal procedure transition refunded -> succeeded', 'the message names the machine and states');

-- Birth: a procedure is inserted pending, with nothing collected, refunded or final, whoever inserts
-- it; every flow of the platform does (cp.new_procedure, sched.run_due). The owner included.
create function pg_temp.insert_procedure(p_status text, p_collected bigint default 0, p_refunded bigint default 0,
                                         p_final timestamptz default null) returns bigint
language sql as $$
    insert into cp.procedure (kind, status, merchant_id, subscriber_id, carrier_id, amount_minor, currency,
                              collected_minor, refunded_minor, created_at, updated_at, final_at)
    select 'charge', p_status::cp.procedure_status, p.merchant_id, p.subscriber_id, p.carrier_id, 100, p.currency,
           p_collected, p_refunded, now(), now(), p_final
    from cp.procedure p where p.kind = 'charge' limit 1
    returning procedure_id
$$;
select throws_ok($$ select pg_temp.insert_procedure('in_flight') $$, 'CP068', null,
                 'a procedure cannot be born in flight');
select throws_ok($$ select pg_temp.insert_procedure('succeeded', 100) $$, 'CP068', null,
                 'a procedure cannot be born succeeded (with money collected)');
select throws_ok($$ select pg_temp.insert_procedure('unknown') $$, 'CP068', null,
                 'a procedure cannot be born unknown');
select throws_ok($$ select pg_temp.insert_procedure('failed', p_final => now()) $$, 'CP068', null,
                 'a procedure cannot be born failed');
select throws_ok($$ select pg_temp.insert_procedure('refunded', 100, 100) $$, 'CP068', null,
                 'a procedure cannot be born refunded');
select throws_ok($$ select pg_temp.insert_procedure('pending', 100) $$, 'CP068', null,
                 'nor pending with money already collected');
select lives_ok($$ select pg_temp.insert_procedure('pending') $$, 'pending with nothing collected is the birth state');
select is((select count(*)::int from cp.procedure p where p.status <> 'pending' and not exists
             (select 1 from cp.event e where e.aggregate_type = 'procedure' and e.aggregate_id = p.procedure_id
                and e.kind = 'status_changed')),
          0, 'every procedure not pending got there by a transition that wrote its event');

-- Consent: evidence, only ever added.
select lives_ok($$ insert into cp.consent (subscriber_id, merchant_id, method, evidence, given_at)
                   select subscriber_id, (select merchant_id from cp.merchant where code = 'acme'), 'pin', '{}', now()
                   from cp.subscriber limit 1 $$, 'consent rows can be added');
select throws_ok($$ update cp.consent set method = 'forged' $$, 'CP069', null, 'consent rows cannot be updated');
select throws_ok($$ delete from cp.consent $$, 'CP069', null, 'consent rows cannot be deleted');
select throws_ok($$ truncate cp.consent $$, 'CP069', null, 'the consent log cannot be truncated');

select * from finish();
rollback;
