"""Carrier reservations of two-step charges, so an unconfirmed one is released exactly once.

`cp.reservation`: one row per reservation a two-step charge call made at its carrier (the reserve step
answered, reported by the adapter with the call's result). It is captured when its call succeeds; when
the call can no longer confirm it (failed for good, our confirmation window closed while it was queued,
the merchant cancelled it) one release call of the carrier's cancel operation is queued
(`release_call_id`, unique: never two); a reservation the carrier let lapse is never released.

"""

from carrierpay.revisions import downgrade, executes

revision = "0022"
down_revision = "0021"

upgrade = executes(
    """
        create table cp.reservation (
            reservation_id      bigint generated always as identity primary key,
            call_id             bigint not null references cp.carrier_call,
            procedure_id        bigint not null,
            carrier_id          integer not null references cp.carrier,
            carrier_ref         text not null,
            amount_minor        bigint not null check (amount_minor >= 0),
            cancel_operation    text not null,
            status              text not null default 'held'
                                check (status in ('held', 'captured', 'releasing', 'released', 'not_released',
                                                  'lapsed')),
            reserved_at         timestamptz not null,
            confirm_by          timestamptz,
            carrier_expires_at  timestamptz,
            release_call_id     bigint unique references cp.carrier_call,
            release_reason      text,
            settled_at          timestamptz,
            unique (call_id, carrier_ref)
        );
        comment on table cp.reservation is
            'reservations made at carriers by two-step charge calls; released once when never confirmed';
        comment on column cp.reservation.confirm_by is
            'our confirmation window (two_step.confirm_within_s): a charge still queued then is given up';
        comment on column cp.reservation.carrier_expires_at is
            'when the carrier lets the reservation lapse by itself (two_step.expiry_s): no release after it';
        create index reservation_open on cp.reservation (status) where status in ('held', 'releasing');
        """
)
