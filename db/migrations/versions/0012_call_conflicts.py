"""Carrier calls: answers that contradict what we hold, kept where operators can see them.

A callback that says "failed" for a call that already succeeded, another amount or currency than
the payment's, or a result for a call that was never handed to the carrier moves no money; each is
kept here (and shown by report.call_conflicts) so a person can find out what really happened.

"""

from carrierpay.revisions import downgrade, executes

revision = "0012"
down_revision = "0011"

upgrade = executes(
    """
        create table cp.call_conflict (
            conflict_id   bigint generated always as identity primary key,
            call_id       bigint not null references cp.carrier_call,
            procedure_id  bigint not null references cp.procedure,
            carrier_id    integer not null references cp.carrier,
            kind          text not null check (kind in ('outcome', 'amount', 'currency', 'not_sent')),
            call_status   cp.call_status not null,
            reported      jsonb not null,
            recorded_at   timestamptz not null
        );
        create index call_conflict_call on cp.call_conflict (call_id);
        create index call_conflict_recorded on cp.call_conflict (recorded_at);
        comment on table cp.call_conflict is
            'Carrier answers that contradict the call''s state (settled the other way, another amount or '
            'currency, or a result for a call never sent); none of them changed the call or the ledger';
        comment on column cp.call_conflict.call_status is 'the call''s status when the answer arrived';
        comment on column cp.call_conflict.reported is 'what the answer said (already redacted by the daemon)';
        """
)
