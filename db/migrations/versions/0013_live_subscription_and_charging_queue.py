"""One live subscription per subscriber and product; charge calls that wait for charging hours.

A subscriber may hold at most one subscription that is not cancelled (pending_optin included: a
second pending one could be confirmed too) to each product, whichever path creates it (the merchant
API, an SMS keyword, an operator). Two live ones would be charged twice every period.

Queued calls that move money (charges) carry what `adapter.claim_calls` needs to keep them inside
the charging hours without a join on the hottest query: whether the hours apply, and the
subscriber's own timezone when it has one (null: the carrier's).

"""

from carrierpay.revisions import downgrade, executes

revision = "0013"
down_revision = "0012"

upgrade = executes(
    """
        -- Duplicates made before the index existed would block it: keep one per subscriber and
        -- product (a confirmed one before one waiting for opt-in, then the one paid furthest, then
        -- the oldest) and cancel the others, which the subscriber never meant to have.
        update cp.subscription s
        set status = 'cancelled', cancel_reason = 'duplicate', cancelled_at = now(), next_charge_at = null
        from (
            select subscription_id,
                   row_number() over (partition by subscriber_id, product_id
                                      order by status = 'pending_optin', paid_through desc nulls last,
                                               subscription_id) as n
            from cp.subscription where status <> 'cancelled'
        ) d
        where s.subscription_id = d.subscription_id and d.n > 1;

        create unique index subscription_one_live on cp.subscription (subscriber_id, product_id)
            where status <> 'cancelled';

        alter table cp.call_queue add column charging_hours boolean not null default false;
        alter table cp.call_queue add column timezone text;
        comment on column cp.call_queue.charging_hours is
            'The call moves money (a charge): claimed only inside the charging hours of the subscriber''s local time';
        comment on column cp.call_queue.timezone is
            'The subscriber''s own timezone when it has one (charging_hours calls only); null: the carrier''s';
        update cp.call_queue q set charging_hours = true, timezone = s.timezone
        from cp.carrier_call c
        join cp.procedure p using (procedure_id)
        join cp.subscriber s on s.subscriber_id = p.subscriber_id
        where c.call_id = q.call_id and c.operation = 'charge';
        """
)
