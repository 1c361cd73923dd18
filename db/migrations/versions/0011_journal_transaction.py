"""Journals: the transaction that posted each one, so no later transaction can add entries to it.

A journal is closed once the transaction that inserted it ends: its balance and its count of
entries are checked at that commit, and entries added by any later transaction would escape the
check. The column records the top-level transaction id (`pg_current_xact_id()`, the same inside a
subtransaction), which the ledger triggers compare with the inserting transaction's own. Journals
posted before this revision have none and are closed.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        alter table cp.journal add column xact_id xid8;
        alter table cp.journal alter column xact_id set default pg_catalog.pg_current_xact_id();
        comment on column cp.journal.xact_id is
            'Top-level transaction that posted the journal; entries may be added only by that transaction '
            '(null: posted before the rule existed, closed)';
        """
    )


def downgrade() -> None:
    raise NotImplementedError("carrierpay migrations are forward-only")
