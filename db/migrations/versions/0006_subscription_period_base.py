"""Subscriptions: the period index at which the anchor applies, so re-anchoring a subscription
(on reactivation after suspension) keeps its period index growing instead of starting again at 0
and colliding with the periods already charged.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        alter table cp.subscription add column period_base integer not null default 0;
        comment on column cp.subscription.period_base is
            'Period index that starts at anchor_local: period p starts (p - period_base) plan steps after it';
        """
    )


def downgrade() -> None:
    raise NotImplementedError("carrierpay migrations are forward-only")
