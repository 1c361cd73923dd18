-- The legal transitions of the three state machines (drawn in docs/architecture.md). Triggers call
-- cp.assert_transition for every status change, whoever writes the row.

-- Raise CP060 unless moving p_machine from p_from to p_to is allowed.
create or replace function cp.assert_transition(p_machine text, p_from text, p_to text) returns void
language plpgsql immutable
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_allowed text[];
begin
    if p_from = p_to then
        return;
    end if;
    v_allowed := case p_machine
        when 'procedure' then case p_from
            when 'pending' then array['in_flight', 'failed']
            when 'in_flight' then array['succeeded', 'failed', 'unknown']
            when 'unknown' then array['succeeded', 'failed']
            when 'succeeded' then array['partially_refunded', 'refunded']
            when 'partially_refunded' then array['refunded']
        end
        when 'subscription' then case p_from
            when 'pending_optin' then array['active', 'cancelled']
            when 'active' then array['retrying', 'cancelled']
            when 'retrying' then array['active', 'grace', 'cancelled']
            when 'grace' then array['active', 'suspended', 'cancelled']
            when 'suspended' then array['active', 'cancelled']
        end
        when 'carrier_call' then case p_from
            when 'queued' then array['leased', 'failed']
            when 'leased' then array['queued', 'awaiting_result', 'done', 'failed', 'unknown']
            when 'awaiting_result' then array['done', 'failed', 'unknown']
            when 'unknown' then array['done', 'failed']
        end
    end;
    if v_allowed is null or not (p_to = any (v_allowed)) then
        perform cp.fail('CP060', format('illegal %s transition %s -> %s', p_machine, p_from, p_to));
    end if;
end
$$;
