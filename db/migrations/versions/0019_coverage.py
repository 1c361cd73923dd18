"""Carrier coverage and subscriber journeys.

The history shipper removes events from the payment database once the history store has them, but
merchants still read a payment's or a subscription's status timeline through `api.payment` and
`api.subscription`: `cp.timeline_entry` keeps the compact part of each shipped status event (when,
what, to which status), written by `adapter.complete_history_batch` as it deletes the events.

Revision ID: 0019
Revises: 0015
Create Date: 2026-12-03
"""

from alembic import op

revision = "0019"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        create table cp.timeline_entry (
            aggregate_type  text not null,
            aggregate_id    bigint not null,
            event_id        bigint not null,
            occurred_at     timestamptz not null,
            kind            text not null,
            to_status       text,
            primary key (aggregate_type, aggregate_id, event_id)
        );
        comment on table cp.timeline_entry is
            'Compact copy of shipped procedure and subscription events, so the API timeline stays complete';
        """
    )


def downgrade() -> None:
    raise NotImplementedError("carrierpay migrations are forward-only")
