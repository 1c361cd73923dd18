-- Delivery receipts and the carrier calls they settle (db/procedures/sms.sql), and the text of a
-- sensitive SMS once its carrier has it.

-- Note when a call starts waiting for its receipt, so adapter.expire_awaiting can time the wait.
create or replace function cp.tg_carrier_call__awaiting_since() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    if new.status = 'awaiting_result' and old.status is distinct from 'awaiting_result' then
        new.awaiting_since := cp.clock_now();
    end if;
    return new;
end
$$;

-- A sensitive SMS (a PIN) that the carrier has (sent, accepted, failed for good or lost on the
-- way) needs its text no more: the text is replaced by its redacted form in the statement that
-- records the outcome, so no later read, copy or backup of the row holds the secret. A call going
-- back to the queue (throttled, unreachable, lease expired) keeps it; a new attempt after a failure
-- copies the text as it was sent (cp.apply_call_result).
create or replace function cp.tg_carrier_call__scrub_sensitive() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    new.params := (new.params - 'redacted_text')
                  || jsonb_build_object('text', coalesce(new.params->>'redacted_text', '[redacted]'), 'redacted', true);
    return new;
end
$$;

-- Calls that just learnt their carrier id: apply receipts that arrived before them (kept in the inbox).
drop function if exists cp.tg_carrier_call__rematch_callbacks() cascade;
create or replace function cp.tg_carrier_call__rematch() returns trigger
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    perform cp.rematch_callbacks(n.call_id)
    from new_rows n join old_rows o using (call_id)
    where n.carrier_ref is not null and n.carrier_ref is distinct from o.carrier_ref
      and n.status in ('awaiting_result', 'unknown')
    order by n.call_id;
    return null;
end
$$;

drop trigger if exists _110_awaiting_since on cp.carrier_call;
create trigger _110_awaiting_since before update of status on cp.carrier_call
    for each row execute function cp.tg_carrier_call__awaiting_since();
drop trigger if exists _120_scrub_sensitive on cp.carrier_call;
create trigger _120_scrub_sensitive before update of status on cp.carrier_call
    for each row
    when (new.operation = 'send_sms' and new.status in ('awaiting_result', 'done', 'failed', 'unknown')
          and new.params->>'sensitive' = 'true' and new.params->>'redacted' is null)
    execute function cp.tg_carrier_call__scrub_sensitive();
-- After the _900 event trigger (statement triggers fire in name order), so the history shows the
-- call waiting before it is settled.
drop trigger if exists _950_rematch_callbacks on cp.carrier_call;
create trigger _950_rematch_callbacks after update on cp.carrier_call
    referencing old table as old_rows new table as new_rows
    for each statement execute function cp.tg_carrier_call__rematch();
