"""Carrier calls: since when a call has been held because its carrier could not be reached.

A call that never reached its carrier (connection refused, TLS handshake refused, carrier down)
is held on the queue and tried again on a back-off that grows with the time it has been held,
up to a limit after which it fails; this column is where that time starts.

"""

from carrierpay.revisions import downgrade, executes

revision = "0008"
down_revision = "0007"

upgrade = executes(
    """
        alter table cp.carrier_call add column unreachable_since timestamptz;
        comment on column cp.carrier_call.unreachable_since is
            'Business time this call first failed to reach its carrier (nothing sent); it is held and tried '
            'again until cp.unreachable_retry_at gives up';
        """
)
