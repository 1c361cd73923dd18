"""The subscriber timing's top-up rhythm: per subscriber, when the last top-up seen began (a renewal
collected 18 hours or more after the one before) and a learned cycle in days between top-ups
(cp.subscriber_timing, 12 bytes more a row), the outcome's time on the append-only delta it is folded
from, and a counter of first attempts moved to a likely top-up day (docs/scheduling.md,
"Per-subscriber timing").

"""

from carrierpay.revisions import downgrade, executes

revision = "0026"
down_revision = "0025"

upgrade = executes(
    """
        alter table cp.subscriber_timing
            add column last_topup_at timestamptz,
            add column cycle_tenths  smallint check (cycle_tenths between 10 and 70),
            add column cycle_gaps    smallint not null default 0 check (cycle_gaps between 0 and 15);
        comment on column cp.subscriber_timing.last_topup_at is
            'When the last top-up seen began: a renewal collected 18 hours or more after the one before';
        comment on column cp.subscriber_timing.cycle_tenths is
            'Learned days between top-ups seen, in tenths of a day (1.0 to 7.0), null before a second one';
        comment on column cp.subscriber_timing.cycle_gaps is
            'How many gaps between top-ups seen the cycle was learned from (capped at 15)';

        alter table cp.subscriber_hour_delta add column settled_at timestamptz;
        comment on column cp.subscriber_hour_delta.settled_at is
            'When the outcome was known (the fold may run hours later)';

        create sequence cp.timing_rhythm_waits;
        comment on sequence cp.timing_rhythm_waits is
            'How many attempts (a period''s first, or a retry after a stepped-down failure) the subscriber '
            'timing moved to a later, likely top-up day';
        """
)
