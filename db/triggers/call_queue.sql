-- Triggers on cp.call_queue: waking the adapters of a carrier that got new work.

-- Wake the adapters of each carrier that got new work, at most once per statement, and only when
-- the carrier had no other call ready to claim. A NOTIFY takes a database-wide lock from commit
-- until the commit is flushed, so notifying on every charge would serialise all charges (no group
-- commit); adapters that have ready calls are busy and claim again without waiting for a wake-up
-- (the poll interval bounds the rare case of a call committed just after their last empty claim).
create or replace function cp.tg_call_queue__notify() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_code text;
begin
    for v_code in
        -- once per carrier of the statement, not once per row (a batch of renewals is one statement)
        select c.code from (select distinct carrier_id from new_rows) n join cp.carrier c using (carrier_id)
        where not exists (select 1 from cp.call_queue q
                          where q.carrier_id = n.carrier_id and q.lease_until is null
                            and q.available_at <= cp.clock_now()
                            and q.call_id not in (select call_id from new_rows))
    loop
        perform pg_catalog.pg_notify('carrierpay_calls', v_code);
    end loop;
    return null;
end
$$;

create or replace trigger _900_notify after insert on cp.call_queue
    referencing new table as new_rows
    for each statement execute function cp.tg_call_queue__notify();
