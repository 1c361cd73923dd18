"""Vocabularies as data: the regulation rule keys and the failure reasons, with what each means.

A rule key a preset or carrier override may set, and the default it takes when none does, was a
literal inside cp.effective_rules; what a failure reason means (the subscription ends, the carrier
said no for certain, nothing was sent, the subscriber lacks funds) was a literal list in each
function that needed it. Both become rows, filled by db/procedures/vocabulary.sql.

Revision ID: 0017
Revises: 0015
Create Date: 2026-12-03
"""

from alembic import op

revision = "0017"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
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
        """
    )


def downgrade() -> None:
    raise NotImplementedError("carrierpay migrations are forward-only")
