"""Carrier calls: which lease an answer belongs to.

An adapter records each carrier answer as soon as it arrives and, when the database connection
drops, records it again after reconnecting: it cannot tell whether the commit it was waiting for
happened. Numbering a call's leases lets `adapter.complete_calls` recognise an answer it already
recorded (and an answer from a lease the call has since outlived), so a repeat changes nothing.

"""

from carrierpay.revisions import downgrade, executes

revision = "0015"
down_revision = "0014"

upgrade = executes(
    """
        alter table cp.carrier_call
            add column lease_no integer not null default 0,
            add column answered_lease_no integer;
        comment on column cp.carrier_call.lease_no is
            'How many times the call has been leased to an adapter: the number of its latest lease';
        comment on column cp.carrier_call.answered_lease_no is
            'The latest lease whose answer adapter.complete_calls recorded; an answer for it or an earlier '
            'lease is a repeat';
        """
)
