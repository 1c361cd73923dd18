"""Journals: the transaction that posted each one, so no later transaction can add entries to it.

A journal is closed once the transaction that inserted it ends: its balance and its count of
entries are checked at that commit, and entries added by any later transaction would escape the
check. The column records the top-level transaction id (`pg_current_xact_id()`, the same inside a
subtransaction), which the ledger triggers compare with the inserting transaction's own. Journals
posted before this revision have none and are closed.

"""

from carrierpay.revisions import downgrade, executes

revision = "0011"
down_revision = "0010"

upgrade = executes(
    """
        alter table cp.journal add column xact_id xid8;
        alter table cp.journal alter column xact_id set default pg_catalog.pg_current_xact_id();
        comment on column cp.journal.xact_id is
            'Top-level transaction that posted the journal; entries may be added only by that transaction '
            '(null: posted before the rule existed, closed)';
        """
)
