"""Payment core: merchants, carriers, subscribers, products, subscriptions, procedures, carrier
calls, the ledger, events, regulation, entitlements and merchant notifications.

"""

from carrierpay.revisions import downgrade, executes

revision = "0002"
down_revision = "0001"

TYPES = """
create type cp.plan as enum ('one_time', 'daily', 'weekly', 'monthly');
create type cp.procedure_kind as enum ('charge', 'refund', 'balance_check', 'sms');
create type cp.procedure_status as enum
    ('pending', 'in_flight', 'succeeded', 'failed', 'unknown', 'partially_refunded', 'refunded');
create type cp.subscription_status as enum
    ('pending_optin', 'active', 'retrying', 'grace', 'suspended', 'cancelled');
create type cp.call_status as enum ('queued', 'leased', 'awaiting_result', 'done', 'failed', 'unknown');
create type cp.optin_status as enum ('pending', 'confirmed', 'expired', 'failed', 'used');
create type cp.account_kind as enum
    ('carrier_receivable', 'carrier_share', 'merchant_payable', 'platform_revenue', 'tax_payable');
"""

TABLES = """
create table cp.regulation (
    code        text primary key,
    name        text not null,
    source      text not null,
    rules       jsonb not null default '{}'
);
comment on table cp.regulation is 'Regulation presets (per country or region); rules as data, read by cp.effective_rules()';

create table cp.country (
    country     char(2) primary key,
    name        text not null,
    vat_bp      integer not null check (vat_bp between 0 and 10000)
);
comment on column cp.country.vat_bp is 'VAT (or excise) included in consumer prices, in basis points';

create table cp.carrier (
    carrier_id       integer generated always as identity primary key,
    code             text not null unique check (code ~ '^[a-z0-9_]+$'),
    name             text not null,
    country          char(2) not null references cp.country,
    mcc              text not null,
    mnc              text not null,
    currency         char(3) not null,
    timezone         text not null,
    tps              integer not null default 10 check (tps > 0),
    carrier_share_bp integer not null default 0 check (carrier_share_bp between 0 and 10000),
    regulation_code  text not null references cp.regulation,
    rules_override   jsonb not null default '{}',
    spec             jsonb not null,
    enabled          boolean not null default true,
    created_at       timestamptz not null default now()
);

create table cp.carrier_prefix (
    prefix      text primary key check (prefix ~ '^\\+[0-9]{1,14}$'),
    carrier_id  integer not null references cp.carrier on delete cascade
);
create index on cp.carrier_prefix (carrier_id);

create table cp.merchant (
    merchant_id     integer generated always as identity primary key,
    code            text not null unique check (code ~ '^[a-z0-9_]+$'),
    name            text not null,
    db_role         text not null unique,
    webhook_url     text,
    webhook_secret  text not null,
    platform_fee_bp integer not null default 0 check (platform_fee_bp between 0 and 10000),
    created_at      timestamptz not null default now()
);

create table cp.product (
    product_id      integer generated always as identity primary key,
    merchant_id     integer not null references cp.merchant,
    code            text not null,
    name            text not null,
    retry_policy    text not null default 'step_down' check (retry_policy in ('step_down', 'accumulate', 'defer')),
    retry_timing    text not null default 'best_hour' check (retry_timing in ('fixed', 'best_hour')),
    fixed_retry_hours integer[] not null default '{1,4,7,10,13,16,19,22}',
    created_at      timestamptz not null default now(),
    unique (merchant_id, code)
);

create table cp.price_point (
    price_point_id  integer generated always as identity primary key,
    product_id      integer not null references cp.product,
    carrier_id      integer references cp.carrier,
    country         char(2) references cp.country,
    plan            cp.plan not null,
    amount_minor    bigint not null check (amount_minor > 0),
    currency        char(3) not null,
    variant         text not null,
    active          boolean not null default true,
    check ((carrier_id is null) <> (country is null))
);
create unique index price_point_unique on cp.price_point
    (product_id, coalesce(carrier_id, 0), coalesce(country, ''), plan, amount_minor);

create table cp.subscriber (
    subscriber_id   bigint generated always as identity primary key,
    msisdn          text not null unique check (msisdn ~ '^\\+[1-9][0-9]{6,14}$'),
    carrier_id      integer not null references cp.carrier,
    timezone        text,
    created_at      timestamptz not null default now()
);

create table cp.subscription (
    subscription_id bigint generated always as identity primary key,
    merchant_id     integer not null references cp.merchant,
    subscriber_id   bigint not null references cp.subscriber,
    product_id      integer not null references cp.product,
    plan            cp.plan not null check (plan <> 'one_time'),
    status          cp.subscription_status not null,
    price_point_id  integer not null references cp.price_point,
    anchor_local    timestamp,
    period_index    integer not null default 0,
    next_charge_at  timestamptz,
    paid_through    timestamptz,
    status_since    timestamptz not null,
    collected_in_period bigint not null default 0,
    attempts_today  integer not null default 0,
    attempts_day    date,
    retry_level     integer not null default 0,
    cancel_reason   text,
    cancelled_at    timestamptz,
    created_at      timestamptz not null default now()
);
create index subscription_due on cp.subscription (next_charge_at)
    where status in ('active', 'retrying', 'grace', 'suspended');
create index on cp.subscription (subscriber_id);
create index on cp.subscription (merchant_id);

create table cp.optin (
    optin_id        bigint generated always as identity primary key,
    merchant_id     integer not null references cp.merchant,
    subscriber_id   bigint not null references cp.subscriber,
    product_id      integer not null references cp.product,
    subscription_id bigint references cp.subscription,
    purpose         text not null check (purpose in ('subscribe', 'charge')),
    pin_hash        text not null,
    status          cp.optin_status not null default 'pending',
    attempts        integer not null default 0,
    max_attempts    integer not null,
    expires_at      timestamptz not null,
    confirmed_at    timestamptz,
    created_at      timestamptz not null default now()
);
create index on cp.optin (subscriber_id);

create table cp.consent (
    consent_id      bigint generated always as identity primary key,
    subscriber_id   bigint not null references cp.subscriber,
    merchant_id     integer not null references cp.merchant,
    product_id      integer references cp.product,
    method          text not null,
    evidence        jsonb not null default '{}',
    given_at        timestamptz not null
);
comment on table cp.consent is 'Immutable consent log (who agreed to what, when, how)';

create table cp.procedure (
    procedure_id    bigint generated always as identity primary key,
    kind            cp.procedure_kind not null,
    status          cp.procedure_status not null default 'pending',
    merchant_id     integer references cp.merchant,
    subscriber_id   bigint not null references cp.subscriber,
    carrier_id      integer not null references cp.carrier,
    product_id      integer references cp.product,
    price_point_id  integer references cp.price_point,
    subscription_id bigint references cp.subscription,
    parent_id       bigint references cp.procedure,
    period_index    integer,
    amount_minor    bigint not null default 0 check (amount_minor >= 0),
    currency        char(3) not null,
    collected_minor bigint not null default 0,
    refunded_minor  bigint not null default 0,
    variant         text,
    reason          text,
    result          jsonb not null default '{}',
    metadata        jsonb not null default '{}',
    created_at      timestamptz not null,
    updated_at      timestamptz not null,
    final_at        timestamptz,
    check (refunded_minor between 0 and collected_minor)
);
create index on cp.procedure (subscriber_id, created_at);
create index on cp.procedure (merchant_id, created_at);
create index on cp.procedure (subscription_id) where subscription_id is not null;
create index on cp.procedure (parent_id) where parent_id is not null;
-- One successful (or possibly successful) charge per subscription period, whoever inserts.
create unique index procedure_one_charge_per_period on cp.procedure (subscription_id, period_index)
    where kind = 'charge' and subscription_id is not null
      and status in ('pending', 'in_flight', 'unknown', 'succeeded', 'partially_refunded', 'refunded')
      and (metadata->>'partial') is null;

create table cp.carrier_call (
    call_id         bigint generated always as identity primary key,
    procedure_id    bigint not null references cp.procedure,
    carrier_id      integer not null references cp.carrier,
    operation       text not null,
    pattern         text not null default 'sync',
    safe_to_repeat  boolean not null,
    status          cp.call_status not null default 'queued',
    attempt         integer not null default 1,
    correlator      text not null unique,
    params          jsonb not null default '{}',
    outcome         text,
    reason          text,
    carrier_code    text,
    carrier_ref     text,
    reconcile_attempts integer not null default 0,
    next_reconcile_at  timestamptz,
    created_at      timestamptz not null,
    finished_at     timestamptz
);
create index on cp.carrier_call (procedure_id);
create index carrier_call_to_reconcile on cp.carrier_call (carrier_id, next_reconcile_at)
    where status in ('unknown', 'awaiting_result');

-- The work queue is kept apart from the history of calls: small, hot, vacuumed quickly.
create table cp.call_queue (
    call_id         bigint primary key references cp.carrier_call,
    carrier_id      integer not null references cp.carrier,
    available_at    timestamptz not null,
    lease_until     timestamptz,
    worker          text
);
create index call_queue_ready on cp.call_queue (carrier_id, available_at) where lease_until is null;
create index call_queue_leased on cp.call_queue (lease_until) where lease_until is not null;

create table cp.callback_inbox (
    carrier_id      integer not null references cp.carrier,
    dedupe_key      text not null,
    payload         jsonb not null,
    received_at     timestamptz not null default now(),
    primary key (carrier_id, dedupe_key)
);

create table cp.idempotency (
    merchant_id     integer not null references cp.merchant,
    idem_key        text not null,
    operation       text not null,
    request_hash    text not null,
    response        jsonb,
    created_at      timestamptz not null default now(),
    primary key (merchant_id, idem_key)
);

create table cp.ledger_account (
    account_id      integer generated always as identity primary key,
    kind            cp.account_kind not null,
    carrier_id      integer references cp.carrier,
    merchant_id     integer references cp.merchant,
    country         char(2) references cp.country,
    currency        char(3) not null,
    unique nulls not distinct (kind, carrier_id, merchant_id, country, currency)
);

create table cp.journal (
    journal_id      bigint generated always as identity primary key,
    procedure_id    bigint not null references cp.procedure,
    kind            text not null check (kind in ('charge', 'refund')),
    currency        char(3) not null,
    posted_at       timestamptz not null
);
create index on cp.journal (procedure_id);

create table cp.ledger_entry (
    entry_id        bigint generated always as identity primary key,
    journal_id      bigint not null references cp.journal,
    account_id      integer not null references cp.ledger_account,
    amount_minor    bigint not null check (amount_minor <> 0)
);
comment on column cp.ledger_entry.amount_minor is 'Debit positive, credit negative; each journal sums to zero';
create index on cp.ledger_entry (journal_id);
create index on cp.ledger_entry (account_id);

create table cp.entitlement (
    entitlement_id  bigint generated always as identity primary key,
    procedure_id    bigint not null unique references cp.procedure,
    merchant_id     integer not null references cp.merchant,
    subscriber_id   bigint not null references cp.subscriber,
    product_id      integer not null references cp.product,
    variant         text not null,
    amount_minor    bigint not null,
    granted_at      timestamptz not null,
    valid_until     timestamptz,
    revoked_at      timestamptz
);
create index on cp.entitlement (subscriber_id);

create table cp.merchant_notification (
    notification_id bigint generated always as identity primary key,
    merchant_id     integer not null references cp.merchant,
    kind            text not null,
    procedure_id    bigint references cp.procedure,
    subscription_id bigint references cp.subscription,
    payload         jsonb not null,
    status          text not null default 'pending' check (status in ('pending', 'delivered', 'failed')),
    attempts        integer not null default 0,
    next_attempt_at timestamptz not null,
    last_error      text,
    created_at      timestamptz not null,
    delivered_at    timestamptz
);
create index merchant_notification_due on cp.merchant_notification (next_attempt_at) where status = 'pending';

-- Outbox of the history store: every state change, written in the changing transaction.
create table cp.event (
    event_id        bigint generated always as identity primary key,
    aggregate_type  text not null,
    aggregate_id    bigint not null,
    kind            text not null,
    occurred_at     timestamptz not null,
    recorded_at     timestamptz not null default clock_timestamp(),
    payload         jsonb not null default '{}'
);
create index on cp.event (aggregate_type, aggregate_id, event_id);

-- Outbox of carrier interactions (requests and responses, already redacted by the adapters).
create table cp.carrier_log (
    log_id          bigint generated always as identity primary key,
    call_id         bigint not null references cp.carrier_call,
    procedure_id    bigint not null,
    carrier_id      integer not null,
    operation       text not null,
    outcome         text,
    reason          text,
    carrier_code    text,
    latency_ms      integer,
    request         jsonb,
    response        jsonb,
    logged_at       timestamptz not null default clock_timestamp()
);
create index on cp.carrier_log (procedure_id, log_id);

-- Success counts per carrier and local hour, one row per completing transaction and slot,
-- folded periodically: completions never update a shared counter row.
create table cp.hour_stats_delta (
    carrier_id      integer not null,
    local_hour      smallint not null check (local_hour between 0 and 23),
    attempts        integer not null,
    successes       integer not null,
    recorded_at     timestamptz not null default clock_timestamp()
);
create table cp.hour_stats (
    carrier_id      integer not null,
    local_hour      smallint not null check (local_hour between 0 and 23),
    attempts        bigint not null default 0,
    successes       bigint not null default 0,
    primary key (carrier_id, local_hour)
);
"""

upgrade = executes(
    # sched: the scheduling engine's entry points (run by `carrierpay scheduler run`).
    "create schema if not exists sched",
    "grant usage on schema sched to carrierpay_admin",
    "alter default privileges in schema sched revoke execute on functions from public",
    TYPES,
    TABLES,
)
