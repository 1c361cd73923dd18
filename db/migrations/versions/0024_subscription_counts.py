"""Subscription counts per carrier, merchant and status, so reports count subscriptions without
scanning them.

`cp.subscription_count` holds the count per carrier, merchant, status and whether a cancellation was
for non-payment; the statement triggers of cp.subscription append what each statement changed to
`cp.subscription_count_delta` (insert only: no row every renewal would wait on), and
sched.fold_rollups moves the deltas into the counts. report.churn and report.carrier_summary add the
two, so they are exact at any time and read a few hundred rows. Existing databases are counted here.

"""

from carrierpay.revisions import downgrade, executes

revision = "0024"
down_revision = "0023"

upgrade = executes(
    """
        create table cp.subscription_count (
            carrier_id      integer not null,
            merchant_id     integer not null,
            status          cp.subscription_status not null,
            unpaid          boolean not null,
            subscriptions   bigint not null,
            primary key (carrier_id, merchant_id, status, unpaid)
        );
        comment on table cp.subscription_count is
            'Subscriptions per carrier, merchant, status and unpaid (cancelled for non-payment), as of the last '
            'sched.fold_rollups; what changed since is in cp.subscription_count_delta';

        create table cp.subscription_count_delta (
            carrier_id      integer not null,
            merchant_id     integer not null,
            status          cp.subscription_status not null,
            unpaid          boolean not null,
            subscriptions   bigint not null
        );
        comment on table cp.subscription_count_delta is
            'What each statement on cp.subscription changed in cp.subscription_count (+ and -), appended by its '
            'triggers and moved into the counts by sched.fold_rollups';

        lock table cp.subscription in share mode;
        insert into cp.subscription_count (carrier_id, merchant_id, status, unpaid, subscriptions)
        select carrier_id, merchant_id, status, coalesce(cancel_reason = 'unpaid', false), count(*)
        from cp.subscription group by 1, 2, 3, 4;
        """
)
