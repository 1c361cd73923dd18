"""History shipping: shipper bookkeeping for the outbox drain (cp.event, cp.carrier_log).

"""

from carrierpay.revisions import downgrade, executes

revision = "0003"
down_revision = "0002"

TABLES = """
-- One row per running (or once-running) history shipper. Each shipper updates only its own
-- row, in the transaction that deletes what it shipped, so the row is never a shared hot spot.
create table cp.history_shipper (
    shipper         text primary key,
    host            text,
    pid             integer,
    started_at      timestamptz not null default clock_timestamp(),
    heartbeat_at    timestamptz not null default clock_timestamp(),
    last_shipped_at timestamptz,
    events_shipped  bigint not null default 0,
    logs_shipped    bigint not null default 0,
    batches         bigint not null default 0,
    last_error      text,
    last_error_at   timestamptz
);
comment on table cp.history_shipper is
    'History shippers: progress and last error of each, read by report.history_lag';

-- The lag report reads the oldest unshipped row by real time; both outboxes are small, but
-- a stopped shipper lets them grow and the report must stay cheap.
create index event_recorded_at on cp.event (recorded_at);
create index carrier_log_logged_at on cp.carrier_log (logged_at);
"""

upgrade = executes(TABLES)
