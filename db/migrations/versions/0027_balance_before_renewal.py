"""A balance query before a renewal the subscriber timing says will likely fail, where the carrier's
terms make a failed charge cost more than a query: when the last query found the balance sufficient
(`cp.subscription.balance_checked_at`), so the charge that follows is not queried again
(docs/scheduling.md, "A balance query before a likely failure").

"""

from carrierpay.revisions import downgrade, executes

revision = "0027"
down_revision = "0026"

upgrade = executes(
    """
        alter table cp.subscription add column balance_checked_at timestamptz;
        comment on column cp.subscription.balance_checked_at is
            'When a balance query before this renewal answered sufficient (or gave no definite answer): '
            'the charge that follows goes without another query; cleared when that charge is queued';
        """
)
