"""Carrier calls: when a call was last handed to a carrier, in real time.

A status query answering "no such transaction" proves nothing while the carrier may still be
processing the request; the reconciler waits until the call has been quiet for longer than the
carrier's timeout, measured on the real clock (the business clock can be moved).

"""

from carrierpay.revisions import downgrade, executes

revision = "0007"
down_revision = "0006"

upgrade = executes(
    """
        alter table cp.carrier_call add column sent_at timestamptz;
        comment on column cp.carrier_call.sent_at is
            'Real time (clock_timestamp) the call was last leased to an adapter, i.e. possibly sent';
        """
)
