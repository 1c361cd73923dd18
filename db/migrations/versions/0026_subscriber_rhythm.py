"""The subscriber timing's top-up rhythm: per subscriber, the local day of their last success at full
price and a learned cycle in days between such days (cp.subscriber_timing, 8 bytes more a row), the
outcome's local day and price on the append-only delta it is folded from, and a counter of first
attempts moved to a likely top-up day (docs/scheduling.md, "Per-subscriber timing").

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-04
"""

from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        alter table cp.subscriber_timing
            add column last_full_day date,
            add column cycle_tenths  smallint check (cycle_tenths between 10 and 70),
            add column cycle_gaps    smallint not null default 0 check (cycle_gaps between 0 and 15);
        comment on column cp.subscriber_timing.last_full_day is
            'The subscriber''s local day of their last renewal collected at full price: the last top-up day seen';
        comment on column cp.subscriber_timing.cycle_tenths is
            'Learned days between such days, in tenths of a day (1.0 to 7.0), null before a second one';
        comment on column cp.subscriber_timing.cycle_gaps is
            'How many gaps between full-price days the cycle was learned from (capped at 15)';

        alter table cp.subscriber_hour_delta
            add column local_day  date,
            add column full_price boolean not null default false;
        comment on column cp.subscriber_hour_delta.local_day is
            'The subscriber''s local day of the outcome (the fold may run after midnight)';
        comment on column cp.subscriber_hour_delta.full_price is
            'The renewal was attempted at the full price (not stepped down, not a part)';

        create sequence cp.timing_rhythm_waits;
        comment on sequence cp.timing_rhythm_waits is
            'How many first attempts of a period the subscriber timing moved to a later, likely top-up day';
        """
    )


def downgrade() -> None:
    raise NotImplementedError("forward-only")
