"""SMS journeys: keywords per carrier short code, the MO inbox, pending SMS confirmations (the YES
window), SMS templates per country and language, subscriber and country languages, and the indexes
that match delivery receipts to carrier calls by the SMSC message id.

"""

from carrierpay.revisions import downgrade, executes

revision = "0005"
down_revision = "0004"

TABLES = """
-- A keyword a subscriber texts to a carrier short code: SUB <KEYWORD> subscribes to the product on
-- the plan, STOP <KEYWORD> cancels. Keywords are stored upper case, without spaces.
create table cp.sms_keyword (
    keyword_id      integer generated always as identity primary key,
    carrier_id      integer not null references cp.carrier,
    short_code      text not null check (short_code ~ '^[0-9A-Za-z]{2,16}$'),
    keyword         text not null check (keyword ~ '^[A-Z0-9]{1,20}$'),
    merchant_id     integer not null references cp.merchant,
    product_id      integer not null references cp.product,
    plan            cp.plan not null check (plan <> 'one_time'),
    active          boolean not null default true,
    created_at      timestamptz not null default now(),
    unique (carrier_id, short_code, keyword)
);
create index on cp.sms_keyword (product_id);

-- Every MO message once: the SMSC's own message id is the key, so a redelivered MO has no second
-- effect. What the message was understood as, and what was done, is kept beside it.
create table cp.mo_inbox (
    carrier_id      integer not null references cp.carrier,
    carrier_msg_id  text not null,
    mo_id           bigint generated always as identity unique,
    msisdn          text not null,
    short_code      text,
    text            text not null,
    normalized      text not null,
    command         text not null,
    subscriber_id   bigint references cp.subscriber,
    result          jsonb not null default '{}',
    received_at     timestamptz not null,
    recorded_at     timestamptz not null default clock_timestamp(),
    primary key (carrier_id, carrier_msg_id)
);
create index on cp.mo_inbox (subscriber_id) where subscriber_id is not null;
create index mo_inbox_recorded_at on cp.mo_inbox (recorded_at);

-- A subscription waiting for the subscriber's YES (double opt-in by MO), one per subscription.
create table cp.sms_confirmation (
    confirmation_id bigint generated always as identity primary key,
    subscription_id bigint not null unique references cp.subscription,
    subscriber_id   bigint not null references cp.subscriber,
    keyword_id      integer not null references cp.sms_keyword,
    short_code      text not null,
    status          text not null default 'pending'
                    check (status in ('pending', 'confirmed', 'expired', 'cancelled')),
    expires_at      timestamptz not null,
    confirmed_at    timestamptz,
    created_at      timestamptz not null
);
create index sms_confirmation_pending on cp.sms_confirmation (subscriber_id) where status = 'pending';

-- Texts sent to subscribers, per template code, country ('*' for any) and language. Placeholders
-- are written {name}; cp.sms_text fills them.
create table cp.sms_template (
    code            text not null check (code ~ '^[a-z0-9_]+$'),
    country         text not null check (country = '*' or country ~ '^[A-Z]{2}$'),
    language        text not null check (language ~ '^[a-z]{2,3}$'),
    text            text not null,
    primary key (code, country, language)
);

alter table cp.country add column language text not null default 'en' check (language ~ '^[a-z]{2,3}$');
comment on column cp.country.language is 'Default language of SMS texts for subscribers in this country';
alter table cp.subscriber add column language text check (language ~ '^[a-z]{2,3}$');
comment on column cp.subscriber.language is 'Language of SMS texts; null means the country''s';

-- When a call started to wait for its receipt (set by a trigger), so the wait can expire.
alter table cp.carrier_call add column awaiting_since timestamptz;

-- Delivery receipts name the SMSC message id, learnt as the call's carrier_ref (a multi-part text has
-- one id per part, joined by ','); receipts that came before their id was known wait in the inbox.
create index carrier_call_carrier_ref on cp.carrier_call using gin (string_to_array(carrier_ref, ','))
    where carrier_ref is not null;
create index callback_inbox_carrier_ref on cp.callback_inbox (carrier_id, (payload->>'carrier_ref'))
    where payload ? 'carrier_ref';
create index carrier_call_awaiting on cp.carrier_call (carrier_id, awaiting_since)
    where status = 'awaiting_result';
"""

upgrade = executes(TABLES)
