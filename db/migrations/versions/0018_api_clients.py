"""Merchant HTTP API: OAuth2 clients, their bearer tokens, and the gateway role that acts for merchants.

`carrierpay api serve` logs in as a member of `carrierpay_gateway`. That role may only trade client
credentials for tokens and look a token up (schema `gateway`); to do anything for a merchant it must
`SET ROLE` to the merchant's own role, so the merchant API sees the merchant, with its privileges.
Client secrets and tokens are random and kept only as SHA-256 digests. A CAMARA request's `sink`
gets its own notifications (CloudEvents) through the webhook dispatcher's table.

"""

from carrierpay.revisions import downgrade, executes

revision = "0018"
down_revision = "0017"

upgrade = executes(
    "create schema if not exists gateway",
    # Roles are cluster-wide: another database on the same server may have made it already.
    """
        do $$
        begin
            if not exists (select 1 from pg_catalog.pg_roles where rolname = 'carrierpay_gateway') then
                create role carrierpay_gateway nologin noinherit;
            end if;
            -- NOINHERIT: the merchant roles it is made a member of give it nothing until it SET ROLEs to one.
            alter role carrierpay_gateway noinherit;
        end
        $$
        """,
    """
        create table cp.api_client (
            client_id       text primary key,
            merchant_id     integer not null references cp.merchant,
            secret_sha256   bytea not null,
            scopes          text[] not null,
            default_product text,
            created_at      timestamptz not null,
            revoked_at      timestamptz
        );
        create index on cp.api_client (merchant_id);
        create table cp.api_token (
            token_sha256    bytea primary key,
            client_id       text not null references cp.api_client,
            scopes          text[] not null,
            expires_at      timestamptz not null
        );
        create index on cp.api_token (client_id);
        create index on cp.api_token (expires_at);
        -- Where a CAMARA request asked for its status changes to go (sink), with the bearer credential
        -- the merchant gave for it (sinkCredential); delivered by the webhook dispatcher.
        create table cp.notification_sink (
            procedure_id     bigint primary key references cp.procedure,
            sink             text not null,
            access_token     text,
            token_expires_at timestamptz
        );
        alter table cp.merchant_notification add column to_sink boolean not null default false;
        comment on table cp.api_client is
            'OAuth2 clients of the merchant HTTP API: the secret is shown once and kept as its SHA-256';
        comment on table cp.api_token is
            'Bearer tokens issued to API clients, by SHA-256; valid until expires_at (wall clock) unless revoked';
        """,
)
