"""Reaction and analytics: per-carrier circuit breakers, operator pauses, hourly rollups.

`cp.carrier_breaker` holds each carrier's thresholds (carrier data an operator sets) and the
breaker's state; it is its own table so that a trip or a probe never rewrites `cp.carrier`, which
every claim reads. `cp.claim_pause` holds operator pauses of a carrier, a merchant or a product.

The rollups are folded from `cp.carrier_call` past a watermark (`cp.rollup_state`): no payment
transaction writes them. `cp.rollup_straggler` remembers the calls the watermark passed before they
settled (and call ids not yet visible), so each is folded exactly once, when it settles.
`cp.rollup_hour` is the hour × carrier × merchant × product × operation × outcome × currency table
the report views read; `cp.rollup_carrier_hour` is the same without merchant and product, so the
dashboard's charts over a month add up a few thousand rows; `cp.rollup_minute` keeps the last two days per carrier and minute for the
five-minute rates the metrics and the dashboard show.

"""

from carrierpay.revisions import downgrade, executes

revision = "0019"
down_revision = "0018"

# The columns cp.rollup_carrier_hour shares with cp.rollup_hour, which it sums over merchants and
# products: sched.fold_rollups adds the same totals to both.
HOURLY_TOTALS = """\
            operation       text not null,
            outcome         text not null,
            currency        char(3) not null,
            calls           bigint not null,
            amount_minor    bigint not null,
            renewals        bigint not null,
            subscription_calls bigint not null,
            step_downs      bigint not null,"""

upgrade = executes(
    f"""
        create table cp.carrier_breaker (
            carrier_id        integer primary key references cp.carrier on delete cascade,
            error_pct         integer not null default 50 check (error_pct between 1 and 100),
            min_calls         integer not null default 20 check (min_calls >= 1),
            window_s          integer not null default 60 check (window_s between 5 and 86400),
            probe_interval_s  integer not null default 30 check (probe_interval_s between 1 and 86400),
            reset_after       integer not null default 3 check (reset_after between 1 and 100),
            state             text not null default 'closed' check (state in ('closed', 'open')),
            changed_at        timestamptz,
            trips             bigint not null default 0,
            reason            text,
            probe_call_id     bigint,
            probe_lease_no    integer,
            next_probe_at     timestamptz,
            healthy_probes    integer not null default 0
        );
        comment on table cp.carrier_breaker is
            'Circuit breaker per carrier: thresholds (operator-set carrier data) and state; '
            'db/procedures/breaker.sql';

        create table cp.claim_pause (
            scope       text not null check (scope in ('carrier', 'merchant', 'product')),
            target_id   integer not null,
            reason      text not null default '',
            paused_at   timestamptz not null,
            paused_by   text not null,
            primary key (scope, target_id)
        );
        comment on table cp.claim_pause is
            'Operator pauses: queued calls of a paused carrier, merchant or product are not sent';

        create table cp.rollup_state (
            singleton       boolean primary key default true check (singleton),
            folded_through  bigint not null default 0,
            folded_at       timestamptz
        );
        insert into cp.rollup_state (singleton) values (true);

        create table cp.rollup_straggler (
            call_id     bigint primary key,
            since       timestamptz not null
        );

        create table cp.rollup_hour (
            hour            timestamptz not null,
            carrier_id      integer not null,
            merchant_id     integer not null,
            product_id      integer not null,
{HOURLY_TOTALS}
            latency_ms_sum  bigint not null,
            latency_le_100ms bigint not null,
            latency_le_500ms bigint not null,
            latency_le_1s   bigint not null,
            latency_le_5s   bigint not null,
            latency_over_5s bigint not null,
            primary key (hour, carrier_id, merchant_id, product_id, operation, outcome, currency)
        );
        comment on table cp.rollup_hour is
            'Settled carrier calls per hour (UTC) of settling, carrier, merchant (0: none), product (0: none), '
            'operation, outcome and currency; folded by sched.fold_rollups';

        create table cp.rollup_carrier_hour (
            hour            timestamptz not null,
            carrier_id      integer not null,
{HOURLY_TOTALS}
            primary key (hour, carrier_id, operation, outcome, currency)
        );
        comment on table cp.rollup_carrier_hour is
            'cp.rollup_hour summed over merchants and products; folded by sched.fold_rollups';

        create table cp.rollup_minute (
            minute          timestamptz not null,
            carrier_id      integer not null,
            calls           bigint not null,
            succeeded       bigint not null,
            failed          bigint not null,
            errors          bigint not null,
            latency_ms_sum  bigint not null,
            primary key (carrier_id, minute)
        );
        comment on table cp.rollup_minute is
            'Settled carrier calls per carrier and minute, the last two days; folded by sched.fold_rollups';
        """
)
