"""Vocabularies as data (rule keys, failure reasons), and per-subscriber charging times.

A rule key a preset or carrier override may set, and the default it takes when none does, was a
literal inside cp.effective_rules; what a failure reason means (the subscription ends, the carrier
said no for certain, nothing was sent, the subscriber lacks funds) was a literal list in each
function that needed it. Both become rows, filled by db/procedures/vocabulary.sql.

Per-subscriber timing (product retry_timing 'subscriber'): each subscriber's charge attempts and
successes by local hour, 48 bytes a subscriber (cp.subscriber_timing), folded from an append-only
delta as the carrier × hour statistics are; see docs/scheduling.md.

"""

from carrierpay.revisions import downgrade, executes

revision = "0017"
down_revision = "0016"

upgrade = executes(
    """
        create table cp.rule_key (
            key           text primary key check (key ~ '^[a-z][a-z0-9_]*$'),
            type          text not null
                          check (type in ('boolean', 'integer', 'minor', 'currency', 'window', 'quiet_hours')),
            default_value jsonb,
            doc           text not null check (doc <> '')
        );
        comment on table cp.rule_key is
            'The keys a regulation preset or a carrier override may set (any other is refused), their '
            'value type and the default cp.effective_rules takes when neither sets one';
        comment on column cp.rule_key.default_value is
            'The value in force when neither the preset nor the carrier sets the key; null: no rule';

        create table cp.failure_reason (
            reason        text primary key check (reason ~ '^[a-z][a-z0-9_]*$'),
            permanent     boolean not null,
            definite      boolean not null,
            nothing_sent  boolean not null,
            steps_down    boolean not null,
            in_result_map boolean not null,
            in_smpp_map   boolean not null,
            doc           text not null check (doc <> ''),
            check (not permanent or definite),
            check (not steps_down or definite),
            check (not (nothing_sent and definite))
        );
        comment on table cp.failure_reason is
            'The reasons a failed carrier call may carry and what each means for the call, the payment '
            'and the subscription';
        comment on column cp.failure_reason.permanent is
            'The subscriber cannot be charged by this carrier any more: a subscription failing so is cancelled';
        comment on column cp.failure_reason.definite is
            'The carrier did not and will not carry out the call: the payment fails, and an answer from an '
            'outlived lease or a status query settles the call';
        comment on column cp.failure_reason.nothing_sent is
            'The call never reached the carrier, or was turned away before it acted: the same call (same '
            'correlator) is queued again without using an attempt';
        comment on column cp.failure_reason.steps_down is
            'The subscriber lacks the funds: a renewal retry may step down to a lower price or accumulate';
        comment on column cp.failure_reason.in_result_map is
            'A carrier spec''s result map may give this reason';
        comment on column cp.failure_reason.in_smpp_map is
            'An SMPP command status or delivery receipt may map to this reason';

        create table cp.subscriber_timing (
            subscriber_id bigint primary key references cp.subscriber,
            hours         bytea not null check (length(hours) = 48)
        );
        comment on table cp.subscriber_timing is
            'A subscriber''s renewal attempts (byte h) and successes (byte 24 + h) at each local hour h, '
            'halved past 60 attempts so old habits fade; read by the subscriber timing (db/procedures/timing.sql)';
        create table cp.subscriber_hour_delta (
            subscriber_id bigint not null,
            local_hour    smallint not null check (local_hour between 0 and 23),
            success       boolean not null
        );
        comment on table cp.subscriber_hour_delta is
            'Renewal outcomes by subscriber and local hour, appended on the payment path and folded into '
            'cp.subscriber_timing by sched.fold_hour_stats, so completions never update a timing row';
        create sequence cp.timing_explorations;
        comment on sequence cp.timing_explorations is
            'How many subscriber-timed attempts were placed at random (exploration), for reports';
        create sequence cp.timing_choices;
        comment on sequence cp.timing_choices is
            'How many subscriber-timed attempts were placed, explored or not';
        alter table cp.product drop constraint product_retry_timing_check,
            add constraint product_retry_timing_check check (retry_timing in ('fixed', 'best_hour', 'subscriber'));
        """
)
