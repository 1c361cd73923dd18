"""Subscriptions: the period index at which the anchor applies, so re-anchoring a subscription
(on reactivation after suspension) keeps its period index growing instead of starting again at 0
and colliding with the periods already charged.

"""

from carrierpay.revisions import downgrade, executes

revision = "0006"
down_revision = "0005"

upgrade = executes(
    """
        alter table cp.subscription add column period_base integer not null default 0;
        comment on column cp.subscription.period_base is
            'Period index that starts at anchor_local: period p starts (p - period_base) plan steps after it';
        """
)
