-- Delivery receipts and the carrier calls they settle (db/procedures/sms.sql).

-- Note when a call starts waiting for its receipt, so adapter.expire_awaiting can time the wait.
create or replace function cp.tg_carrier_call__awaiting_since() returns trigger
language plpgsql
set search_path = pg_catalog, cp
as $$
begin
    if new.status = 'awaiting_result' and old.status is distinct from 'awaiting_result' then
        new.awaiting_since := cp.clock_now();
    end if;
    return new;
end
$$;

-- A call just learnt its carrier id: apply receipts that arrived before it (kept in the inbox).
create or replace function cp.tg_carrier_call__rematch_callbacks() returns trigger
language plpgsql
set search_path = pg_catalog, cp
as $$
begin
    perform cp.rematch_callbacks(new.call_id);
    return null;
end
$$;

drop trigger if exists _110_awaiting_since on cp.carrier_call;
create trigger _110_awaiting_since before update of status on cp.carrier_call
    for each row execute function cp.tg_carrier_call__awaiting_since();
-- After the _900 event triggers, so the history shows the call waiting before it is settled.
drop trigger if exists _950_rematch_callbacks on cp.carrier_call;
create trigger _950_rematch_callbacks after update of carrier_ref on cp.carrier_call
    for each row
    when (new.carrier_ref is not null and new.carrier_ref is distinct from old.carrier_ref
          and new.status in ('awaiting_result', 'unknown'))
    execute function cp.tg_carrier_call__rematch_callbacks();
