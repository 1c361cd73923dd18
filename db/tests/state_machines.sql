-- The three state machines: every transition not in DESIGN §3 raises CP060, whoever writes the row.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(19);

-- Something to hang rows on: a subscriber, a procedure and a call from a real charge.
select api.charge('acme', '+2348020000001', 'gems', 'k1');
select api.subscribe('acme', '+2348020000002', 'club', 'daily', 'k2');

-- Try every (from, to) pair of a machine on a throw-away row inserted in state `from` (inserts are
-- not transitions), and report what the UPDATE to `to` did: 'ok' or the SQLSTATE it raised.
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
begin
    -- Throw-away rows for another subscriber: one live subscription per subscriber and product.
    v_sub.subscriber_id := v_proc.subscriber_id;
    foreach from_status in array v_states loop
        foreach to_status in array v_states loop
            continue when from_status = to_status;
            begin
                if p_machine = 'procedure' then
                    insert into cp.procedure (kind, status, merchant_id, subscriber_id, carrier_id, amount_minor,
                                              currency, created_at, updated_at)
                    values ('charge', from_status::cp.procedure_status, v_proc.merchant_id, v_proc.subscriber_id,
                            v_proc.carrier_id, 100, v_proc.currency, now(), now())
                    returning procedure_id into v_id;
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
                    insert into cp.carrier_call (procedure_id, carrier_id, operation, safe_to_repeat, status,
                                                 correlator, created_at)
                    values (v_proc.procedure_id, v_proc.carrier_id, 'charge', false,
                            from_status::cp.call_status, 'matrix-' || from_status || '-' || to_status, now())
                    returning call_id into v_id;
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

-- The legal transitions, exactly.
select set_eq($$ select from_status, to_status from pg_temp.try_transitions('procedure') where result = 'ok' $$,
              $$ values ('pending', 'in_flight'), ('pending', 'failed'),
                        ('in_flight', 'succeeded'), ('in_flight', 'failed'), ('in_flight', 'unknown'),
                        ('unknown', 'succeeded'), ('unknown', 'failed'),
                        ('succeeded', 'partially_refunded'), ('succeeded', 'refunded'),
                        ('partially_refunded', 'refunded') $$,
              'procedure: the legal transitions are exactly those of the design');
select is((select array_agg(distinct result) from pg_temp.try_transitions('procedure') where result <> 'ok'),
          array['CP060'], 'procedure: every other transition raises CP060');
select is((select count(*)::int from pg_temp.try_transitions('procedure') where result <> 'ok'), 32,
          'procedure: 32 illegal transitions checked');

select set_eq($$ select from_status, to_status from pg_temp.try_transitions('subscription') where result = 'ok' $$,
              $$ values ('pending_optin', 'active'), ('pending_optin', 'cancelled'),
                        ('active', 'retrying'), ('active', 'cancelled'),
                        ('retrying', 'active'), ('retrying', 'grace'), ('retrying', 'cancelled'),
                        ('grace', 'active'), ('grace', 'suspended'), ('grace', 'cancelled'),
                        ('suspended', 'active'), ('suspended', 'cancelled') $$,
              'subscription: the legal transitions are exactly those of the design');
select is((select array_agg(distinct result) from pg_temp.try_transitions('subscription') where result <> 'ok'),
          array['CP060'], 'subscription: every other transition raises CP060');
select is((select count(*)::int from pg_temp.try_transitions('subscription') where result <> 'ok'), 18,
          'subscription: 18 illegal transitions checked (nothing leaves cancelled)');

select set_eq($$ select from_status, to_status from pg_temp.try_transitions('carrier_call') where result = 'ok' $$,
              $$ values ('queued', 'leased'), ('queued', 'failed'),
                        ('leased', 'queued'), ('leased', 'awaiting_result'), ('leased', 'done'),
                        ('leased', 'failed'), ('leased', 'unknown'),
                        ('awaiting_result', 'done'), ('awaiting_result', 'failed'), ('awaiting_result', 'unknown'),
                        ('unknown', 'done'), ('unknown', 'failed') $$,
              'carrier call: the legal transitions are exactly those of the design');
select is((select array_agg(distinct result) from pg_temp.try_transitions('carrier_call') where result <> 'ok'),
          array['CP060'], 'carrier call: every other transition raises CP060');
select is((select count(*)::int from pg_temp.try_transitions('carrier_call') where result <> 'ok'), 18,
          'carrier call: 18 illegal transitions checked');

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

select * from finish();
rollback;
