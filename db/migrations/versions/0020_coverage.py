"""Carrier coverage and subscriber journeys.

The history shipper removes events from the payment database once the history store has them, but
merchants still read a payment's or a subscription's status timeline through `api.payment` and
`api.subscription`: `cp.timeline_entry` keeps the compact part of each shipped status event (when,
what, to which status), written by `adapter.complete_history_batch` as it deletes the events.

A number range may have several routes (its own carrier, then aggregators by priority,
`cp.carrier_route`), and a ported number is routed by a cached number lookup (`cp.number_lookup`); a
partial index finds carriers that are down (calls held as unreachable) without scanning the calls.

"""

from carrierpay.revisions import downgrade, executes

revision = "0020"
down_revision = "0019"

upgrade = executes(
    """
        create table cp.timeline_entry (
            aggregate_type  text not null,
            aggregate_id    bigint not null,
            event_id        bigint not null,
            occurred_at     timestamptz not null,
            kind            text not null,
            to_status       text,
            primary key (aggregate_type, aggregate_id, event_id)
        );
        comment on table cp.timeline_entry is
            'Compact copy of shipped procedure and subscription events, so the API timeline stays complete';

        create table cp.carrier_route (
            prefix      text not null check (prefix ~ '^\\+[0-9]{1,14}$'),
            carrier_id  integer not null references cp.carrier on delete cascade,
            priority    integer not null check (priority between 1 and 1000),
            primary key (prefix, carrier_id)
        );
        comment on table cp.carrier_route is
            'Secondary routes: a carrier (an aggregator) that can also bill a number range it does not own, '
            'tried in priority order after the range''s own carrier (priority 0)';

        create table cp.number_lookup (
            msisdn       text primary key,
            carrier_id   integer references cp.carrier on delete cascade,
            mcc          text,
            mnc          text,
            looked_up_at timestamptz not null,
            expires_at   timestamptz not null
        );
        comment on table cp.number_lookup is
            'Number lookup (HLR/MNP) answers: the network serving a number now (null carrier: none of ours), '
            'which routes it instead of its original prefix until expires_at';

        create index carrier_call_unreachable on cp.carrier_call (carrier_id, unreachable_since)
            where status = 'queued' and unreachable_since is not null;
        """
)
