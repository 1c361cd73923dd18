"""Scheduling: renewal reminders per period, each carrier's shared throughput budget, and the
carrier on each subscription so due renewals are found per carrier by index.

"""

from carrierpay.revisions import downgrade, executes

revision = "0004"
down_revision = "0003"

upgrade = executes(
    """
        alter table cp.subscription add column reminded_period integer;
        alter table cp.subscription add column carrier_id integer references cp.carrier;
        update cp.subscription s set carrier_id = sb.carrier_id from cp.subscriber sb
        where sb.subscriber_id = s.subscriber_id;
        alter table cp.subscription alter column carrier_id set not null;
        drop index cp.subscription_due;
        create index subscription_due on cp.subscription (carrier_id, next_charge_at)
            where status in ('active', 'retrying', 'grace', 'suspended');
        comment on column cp.subscription.reminded_period is
            'Period index whose renewal reminder SMS was queued (at most one reminder per period)';

        -- Calls per second granted to a carrier, shared by every scheduler and adapter. One row per
        -- carrier, touched once per claimed batch (never per payment).
        create table cp.carrier_budget (
            carrier_id   integer primary key references cp.carrier on delete cascade,
            window_start timestamptz not null,
            used         integer not null default 0
        );
        """
)
