"""The business clock can be held: it then stands still until an operator moves it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        alter table cp.clock_offset add column held_at timestamptz;
        comment on column cp.clock_offset.held_at is
            'When set, cp.clock_now() reads this instead of now() + offset_by: time stands still until moved';
        """
    )


def downgrade() -> None:
    raise NotImplementedError("carrierpay migrations are forward-only")
