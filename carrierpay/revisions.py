"""What every alembic revision in db/migrations/versions shares.

A revision module declares `revision`, `down_revision` and its SQL (`upgrade = executes(...)`) and
imports `downgrade` from here. Alembic loads revision files outside any package and before
db/migrations/env.py runs (`carrierpay db migrate` plans from the revision graph first), so the
shared part lives in the installed package rather than next to the revisions.
"""

from __future__ import annotations

from collections.abc import Callable

from alembic import op

__all__ = ["downgrade", "executes"]


def executes(*statements: str) -> Callable[[], None]:
    """A revision's `upgrade`: each statement is one `op.execute`, in the order given."""

    def upgrade() -> None:
        for statement in statements:
            op.execute(statement)

    return upgrade


def downgrade() -> None:
    """Migrations are forward-only: a database is undone by a new forward revision, never rewound."""
    raise NotImplementedError("carrierpay migrations are forward-only")
