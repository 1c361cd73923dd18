"""Opt-ins: what the PIN request and confirmation limits count by.

Each opt-in records the carrier its number was on (limits are the carrier's rules, and a merchant's
budget is per carrier) and the SMS procedure that carries its PIN (a PIN can be checked only once
that SMS was handed to an adapter). `pin_checks` is null while the opt-in's PIN checks are counted
by its own sequence (cp.pin_checks_<optin_id>, which a rollback cannot undo) and holds the final
count once that sequence is folded in and dropped (opt-ins made before this revision have no
sequence: their count is closed, and a pending one reads as expired). Indexes serve the
sliding-window counts per number, per merchant and carrier, and the sweep of opt-ins whose
sequence can be folded.

"""

from carrierpay.revisions import downgrade, executes

revision = "0014"
down_revision = "0013"

upgrade = executes(
    """
        alter table cp.optin
            add column carrier_id integer references cp.carrier,
            add column sms_procedure_id bigint references cp.procedure,
            add column pin_checks integer;
        update cp.optin o set carrier_id = s.carrier_id, pin_checks = o.attempts
        from cp.subscriber s where s.subscriber_id = o.subscriber_id;
        alter table cp.optin alter column carrier_id set not null;
        comment on column cp.optin.carrier_id is
            'Carrier of the number when the PIN was requested: its rules set the limits';
        comment on column cp.optin.sms_procedure_id is
            'The SMS procedure carrying the PIN; the PIN can be checked once an adapter has claimed it';
        comment on column cp.optin.pin_checks is
            'PIN checks made, once folded in from the sequence cp.pin_checks_<optin_id> (null while it counts)';
        comment on column cp.optin.attempts is
            'Wrong PINs: counted as they are committed, and completed with rolled-back checks when folded';

        drop index cp.optin_subscriber_id_idx;
        create index optin_subscriber_recent on cp.optin (subscriber_id, created_at);
        create index optin_merchant_recent on cp.optin (merchant_id, carrier_id, created_at);
        create index optin_merchant_failures on cp.optin (merchant_id, carrier_id, created_at) where attempts > 0;
        create index optin_checks_open on cp.optin (expires_at) where pin_checks is null;
        """
)
