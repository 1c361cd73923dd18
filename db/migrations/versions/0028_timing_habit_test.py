"""Whether a carrier's subscribers keep habitual top-up hours, tested by the subscriber timing's own
randomised choice: its exploring attempts (a random slot) against a sample of the attempts it placed at
the subscriber's best hours (`cp.timing_probe`, one row a subscriber until its outcome is folded), per
carrier (`cp.timing_habit`). A carrier whose best hours do no better than chance is charged at the
product's fixed hours (docs/scheduling.md, "Carriers without habitual hours").

"""

from carrierpay.revisions import downgrade, executes

revision = "0028"
down_revision = "0027"

upgrade = executes(
    """
        create table cp.timing_probe (
            subscriber_id bigint primary key references cp.subscriber,
            carrier_id    integer not null,
            local_slot    timestamp not null,
            explored      boolean not null
        );
        comment on table cp.timing_probe is
            'A subscriber''s latest sampled attempt of the subscriber timing until its outcome is folded: '
            'its local slot, and whether it explored (a random slot) or took the subscriber''s best hours; '
            'every exploring attempt and one in cp.timing_probe_every() of the others';
        create table cp.timing_habit (
            carrier_id         integer primary key references cp.carrier,
            explored           integer not null default 0,
            explored_successes integer not null default 0,
            chosen             integer not null default 0,
            chosen_successes   integer not null default 0
        );
        comment on table cp.timing_habit is
            'Per carrier, the sampled attempts of the subscriber timing folded so far, exploring and chosen by '
            'the subscriber''s hours, and how many of each succeeded: whether the hours choose better than '
            'chance (cp.timing_hours_habitual); halved past cp.timing_habit_memory() attempts';
        """
)
