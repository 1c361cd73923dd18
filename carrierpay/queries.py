"""Every SQL statement the Python side runs, by name. The logic they call lives in db/procedures."""

from __future__ import annotations

# Adapter daemons and the reconciler (role carrierpay_adapter).
CLAIM_CALLS = "select adapter.claim_calls(%(carrier)s, %(limit)s, %(lease)s, %(worker)s)"
COMPLETE_CALLS = "select adapter.complete_calls(%(results)s)"
RECORD_CALLBACK = "select adapter.record_callback(%(carrier)s, %(payload)s)"
EXPIRE_LEASES = "select adapter.expire_leases(%(limit)s)"
EXPIRE_RESERVATIONS = "select adapter.expire_reservations(%(limit)s)"
CLAIM_RECONCILIATIONS = "select adapter.claim_reconciliations(%(carrier)s, %(limit)s)"
ENABLED_CARRIERS = "select code, spec from cp.carrier where enabled order by code"
ALL_CARRIERS = "select code, spec from cp.carrier order by code"
LISTEN_CALLS = "listen carrierpay_calls"
CARRIER_SPEC = "select spec from cp.carrier where code = %(carrier)s"
# Unsettled calls of a carrier named by correlator (a report settles many at once).
UNSETTLED_BY_CORRELATOR = """
    select c.call_id, c.correlator, c.operation
    from cp.carrier_call c join cp.carrier k using (carrier_id)
    where k.code = %(carrier)s and c.correlator = any(%(correlators)s)
      and c.status in ('unknown', 'awaiting_result')
"""
# The carrier-local dates on which calls were sent (which daily reports to download).
CALL_LOCAL_DATES = """
    select distinct (c.created_at at time zone k.timezone)::date
    from cp.carrier_call c join cp.carrier k using (carrier_id)
    where c.call_id = any(%(call_ids)s)
"""
# SMS journeys over SMPP (db/procedures/170_sms.sql): MO messages, late receipts, receipts that never came.
RECORD_MO = "select adapter.record_mo(%(carrier)s, %(mo)s)"
REMATCH_CALLBACKS = "select adapter.rematch_callbacks(%(carrier)s, %(limit)s)"
EXPIRE_AWAITING = "select adapter.expire_awaiting(%(carrier)s, p_limit => %(limit)s)"

# History shipper (role carrierpay_adapter; db/procedures/270_history.sql): claim, confirm, report itself.
HISTORY_CLAIM_EVENTS = "select * from adapter.claim_history_events(%s)"
HISTORY_CLAIM_LOGS = "select * from adapter.claim_carrier_logs(%s)"
HISTORY_COMPLETE_BATCH = "select adapter.complete_history_batch(%s, %s, %s)"
HISTORY_REPORT_SHIPPER = "select adapter.report_history_shipper(%s, %s, %s, %s)"
HISTORY_LAG = "select * from report.history_lag order by outbox"

# The database collector of `carrierpay metrics serve` (role carrierpay_reporter; db/procedures/300_metrics.sql).
METRICS_CARRIERS = """
    select carrier, queue_ready, queue_later, leased, oldest_ready_s, calls_5m, succeeded_5m, failed_5m, errors_5m,
           success_ratio_5m, mean_latency_5m_s, breaker_state, breaker_trips, paused
    from report.metrics_carriers order by carrier
"""
METRICS_UNSETTLED = "select carrier, status, age, calls, overdue from report.metrics_unsettled_calls"
METRICS_WEBHOOKS = "select pending, due, retrying, oldest_pending_s from report.metrics_webhooks"
METRICS_HISTORY = "select outbox, unshipped, extract(epoch from oldest_age)::float8 from report.history_lag"
METRICS_UNBALANCED_JOURNALS = "select count(*) from report.unbalanced_journals"

# Every reader of the report views (dashboard, metrics collector, `carrierpay report`) first: their
# queries are short, and the planner's cost for the views that look up each open payment by key
# passes jit_above_cost, where compiling the plan took longer than running it (benchmarks/RESULTS.md).
READ_WITHOUT_JIT = "set jit = off"

# `carrierpay dashboard` (role carrierpay_reporter): each chart and table, for a time range [from, to).
DASHBOARD_SUCCESS = """
    select hour, carrier, attempts, succeeded, success_pct, renewals, retries, step_downs
    from report.hourly_success where hour >= %(from)s and hour < %(to)s order by hour, carrier
"""
DASHBOARD_REVENUE = """
    select hour, currency, sum(collected_minor)::bigint as collected_minor,
           sum(refunded_minor)::bigint as refunded_minor, sum(net_minor)::bigint as net_minor
    from report.hourly_revenue where hour >= %(from)s and hour < %(to)s group by hour, currency order by hour, currency
"""
DASHBOARD_TOTALS = """
    select carrier, sum(attempts)::bigint as attempts, sum(succeeded)::bigint as succeeded,
           sum(renewals)::bigint as renewals, sum(retries)::bigint as retries, sum(step_downs)::bigint as step_downs
    from report.hourly_success where hour >= %(from)s and hour < %(to)s group by carrier order by carrier
"""
DASHBOARD_BEST_HOURS = "select carrier, local_hour, attempts, successes, success_pct from report.success_by_hour"
DASHBOARD_CARRIERS = """
    select carrier, queue_ready, queue_later, leased, oldest_ready_s, calls_5m, success_ratio_5m, mean_latency_5m_s,
           breaker_state, breaker_trips, paused
    from report.metrics_carriers order by carrier
"""
DASHBOARD_UNSETTLED = "select carrier, status, age, calls, overdue from report.metrics_unsettled_calls"
DASHBOARD_CLOCK = "select b.now, p.folded_at from report.business_time b cross join report.rollup_progress p"
# Who logged in to the dashboard may read reports: a member of the reporter or the admin role.
DASHBOARD_MAY_READ = """
    select pg_catalog.pg_has_role(session_user, 'carrierpay_reporter', 'member'),
           pg_catalog.pg_has_role(session_user, 'carrierpay_admin', 'member')
"""
DASHBOARD_AS_REPORTER = "set role carrierpay_reporter"

# Scheduler (role carrierpay_admin).
RUN_DUE = "select sched.run_due(%(limit)s)"
DUE_LEFT = "select sched.due_left()"
FOLD_HOUR_STATS = "select sched.fold_hour_stats()"
FOLD_ROLLUPS = "select sched.fold_rollups()"
FOLD_LEDGER = "select sched.fold_ledger()"
# The demo's last fold before its report: every settled call, stragglers re-checked now.
FOLD_ROLLUPS_ALL = "select sched.fold_rollups(50000, interval '0 seconds', interval '0 seconds')"
RUN_BREAKERS = "select carrier, state, reason from sched.run_breakers()"

# Operators (role carrierpay_admin).
ONBOARD_CARRIER = "select admin.onboard_carrier(%(spec)s)"
# Reaction (db/procedures/130_breaker.sql): operator pauses and breaker thresholds.
PAUSE_SENDING = "select admin.pause_sending(%(scope)s, %(code)s, %(reason)s)"
RESUME_SENDING = "select admin.resume_sending(%(scope)s, %(code)s)"
SET_BREAKER = "select admin.set_breaker(%(carrier)s, %(settings)s)"
CARRIER_BREAKERS = """
    select carrier, state, paused, trips, changed_at, reason, error_pct, min_calls, window_s, probe_interval_s,
           reset_after
    from report.carrier_breakers order by carrier
"""
SENDING_PAUSES = "select scope, target, reason, paused_at, paused_by from report.sending_pauses order by scope, target"
SET_CARRIER_ENABLED = "select admin.set_carrier_enabled(%(carrier)s, %(enabled)s)"
LIST_CARRIERS = """
    select k.code, k.name, k.country, k.currency, k.tps, k.regulation_code, k.enabled,
           (select count(*) from cp.call_queue q where q.carrier_id = k.carrier_id) as queued,
           (select count(*) from cp.carrier_call c
             where c.carrier_id = k.carrier_id and c.status in ('unknown', 'awaiting_result')) as unsettled
    from cp.carrier k order by k.code
"""
SHOW_CARRIER = """
    select k.code, k.name, k.country, k.mcc, k.mnc, k.currency, k.timezone, k.tps, k.carrier_share_bp,
           k.regulation_code, k.enabled, k.rules_override, k.spec,
           (select jsonb_object_agg(status, n) from (select c.status, count(*) n from cp.carrier_call c
             where c.carrier_id = k.carrier_id group by c.status) s) as calls
    from cp.carrier k where k.code = %(carrier)s
"""
# Calls no reconciliation route settled, and the operator's settlement of one (admin.settle_call).
CALLS_NEEDING_OPERATOR = "select * from report.calls_needing_operator order by call_id"
SETTLE_CALL = "select admin.settle_call(%(call_id)s, %(outcome)s, %(reason)s)"
ADVANCE_CLOCK = "select admin.advance_clock(%(by)s)"
SET_CLOCK = "select admin.set_clock(%(at)s)"
HOLD_CLOCK = "select admin.hold_clock(%(hold)s)"
# The demo's dashboard login: a read-only reporter (roles are cluster-wide, so it is made anew each run).
DEMO_DROP_VIEWER = "drop role if exists carrierpay_demo_viewer"
DEMO_CREATE_VIEWER = "create role carrierpay_demo_viewer login password {password} in role carrierpay_reporter"
DEMO_VIEWER = "carrierpay_demo_viewer"
ADD_SMS_KEYWORD = (
    "select admin.add_sms_keyword(%(carrier)s, %(short_code)s, %(keyword)s, %(merchant)s, %(product)s, %(plan)s)"
)
CLOCK_NOW = "select cp.clock_now()"
# Digits after the decimal point of each currency (ISO 4217: 2 for GBP, 0 for UGX, 3 for KWD), to
# show minor units as major ones.
CURRENCY_EXPONENTS = "select c, cp.currency_exponent(c) from unnest(%(currencies)s::text[]) c"

# Webhook dispatcher (role carrierpay_adapter).
CLAIM_NOTIFICATIONS = "select adapter.claim_notifications(%(limit)s, %(lease)s)"
COMPLETE_NOTIFICATIONS = "select adapter.complete_notifications(%(results)s)"

# Operator CLI (role carrierpay_admin).
ADD_MERCHANT = "select admin.add_merchant(%(code)s, %(name)s, %(webhook_url)s, %(platform_fee_bp)s)"
# For this session: webhook URLs may be plain http (cp.assert_webhook_url; local receivers, demos).
ALLOW_HTTP_WEBHOOK_URLS = "select pg_catalog.set_config('carrierpay.webhook_allow_http', 'on', false)"
LIST_MERCHANTS = (
    "select code, name, db_role, webhook_url, platform_fee_bp, created_at from cp.merchant order by code"
)
ROTATE_MERCHANT_SECRET = "select admin.rotate_merchant_secret(%(code)s)"
ROTATE_MERCHANT_PASSWORD = "select admin.rotate_merchant_password(%(code)s)"
ADD_PRODUCT = "select admin.add_product(%(merchant)s, %(code)s, %(name)s, %(retry_policy)s, %(retry_timing)s)"
ADD_PRICE_POINT = (
    "select admin.add_price_point(%(merchant)s, %(product)s, %(plan)s, %(amount)s, %(currency)s, %(variant)s,"
    " %(carrier)s, %(country)s)"
)
LIST_PRICE_POINTS = """
select m.code, p.code, coalesce(c.code, pp.country), pp.plan::text, pp.amount_minor, pp.currency, pp.variant, pp.active
from cp.price_point pp join cp.product p using (product_id) join cp.merchant m using (merchant_id)
left join cp.carrier c on c.carrier_id = pp.carrier_id
where m.code = %(merchant)s and (%(product)s::text is null or p.code = %(product)s)
order by p.code, pp.plan, pp.amount_minor desc
"""
SUBSCRIBER_SHOW = """
select s.subscriber_id, s.msisdn, c.code, coalesce(s.timezone, c.timezone), s.created_at,
       (select count(*) from cp.subscription x where x.subscriber_id = s.subscriber_id and x.status <> 'cancelled'),
       (select count(*) from cp.procedure p where p.subscriber_id = s.subscriber_id and p.kind = 'charge'),
       (select coalesce(sum(collected_minor - refunded_minor), 0) from cp.procedure p
         where p.subscriber_id = s.subscriber_id and p.kind = 'charge')
from cp.subscriber s join cp.carrier c using (carrier_id) where s.msisdn = %(msisdn)s
"""
SUBSCRIBER_HISTORY = """
select p.created_at, p.kind::text, p.procedure_id, p.status::text, p.amount_minor, p.currency, m.code, p.reason
from cp.procedure p join cp.subscriber s using (subscriber_id) left join cp.merchant m using (merchant_id)
where s.msisdn = %(msisdn)s order by p.procedure_id
"""

# Merchant API wrappers (any role allowed to act for the merchant).
API_CHARGE = "select api.charge(%(merchant)s, %(msisdn)s, %(product)s, %(key)s, %(amount)s, %(metadata)s)"
API_SUBSCRIBE = "select api.subscribe(%(merchant)s, %(msisdn)s, %(product)s, %(plan)s, %(key)s)"
API_CONFIRM_OPTIN = "select api.confirm_optin(%(merchant)s, %(optin_id)s, %(pin)s)"
API_REFUND = "select api.refund(%(merchant)s, %(payment_id)s, %(key)s, %(amount)s, %(reason)s)"
API_CANCEL = "select api.cancel_subscription(%(merchant)s, %(subscription_id)s, %(reason)s)"
API_PAYMENT = "select api.payment(%(merchant)s, %(payment_id)s)"
API_SUBSCRIPTION = "select api.subscription(%(merchant)s, %(subscription_id)s)"

# Reports (role carrierpay_reporter): each view of the report schema by its short name.
# The databases a user may connect to, and whether one holds a migrated carrierpay schema: named
# in the hint when a command is pointed at a database that does not exist.
LIST_DATABASES = """
select datname from pg_catalog.pg_database
where datallowconn and not datistemplate and pg_catalog.has_database_privilege(datname, 'CONNECT')
order by datname
"""
IS_CARRIERPAY_DATABASE = "select pg_catalog.to_regclass('carrierpay_meta.alembic_version') is not null"

REPORT_VIEWS = {
    "revenue": "report.revenue",
    "success": "report.success_by_carrier",
    "hours": "report.success_by_hour",
    "retries": "report.retries_per_success",
    "churn": "report.churn",
    "refunds": "report.refunds",
    "calls": "report.open_calls",
    "operator": "report.calls_needing_operator",
    "ledger": "report.ledger_balances",
    "unbalanced": "report.unbalanced_journals",
    "carriers": "report.carrier_summary",
    "conflicts": "report.call_conflicts",
}


def report_view(name: str) -> str:
    """The select of one report view named in REPORT_VIEWS (only those names: a KeyError otherwise)."""
    return f"select * from {REPORT_VIEWS[name]} order by 1, 2"


# Health check of a database connection.
PING = "select 1"

# `carrierpay demo` (carrierpay/demo.py), as the database owner. It reads what it reports and
# waits for from the report schema, and follows the regulation it reads there: it restates no rule.
DEMO_CARRIER_SUMMARY = "select * from report.carrier_summary order by country, carrier"
# Work the daemons owe now; a call awaiting a callback counts for the carriers that send callbacks.
DEMO_WORK_DUE = """
select coalesce(sum(queue_due + reconcilable_now
                    + case when carrier = any(%(callback_carriers)s) then awaiting_result else 0 end), 0)
from report.count_open_work()
"""
# Calls sent and not settled, or queued and due: what the final settling waits for.
DEMO_OPEN_CALLS = "select coalesce(sum(unsettled + queued_due), 0) from report.count_open_work()"
DEMO_CHARGES_COLLECTED = (
    "select coalesce(sum(charges_collected), 0), coalesce(sum(charges_attempted), 0) from report.carrier_summary"
)
DEMO_OPEN_PROCEDURES = "select kind, status, deferred, count(*) from report.list_open_procedures() group by 1, 2, 3"
DEMO_RECEIVABLES = """
select owner, sum(balance_minor)::bigint from report.ledger_balances
where kind = 'carrier_receivable' group by owner
"""
DEMO_UNBALANCED_JOURNALS = "select count(*) from report.unbalanced_journals"
DEMO_NOTIFICATIONS = "select status, sum(notifications)::bigint from report.notifications group by status"
DEMO_NOTIFICATIONS_DUE = """
select count(*) from report.notifications where status = 'pending' and next_attempt_at <= cp.clock_now()
"""
DEMO_HISTORY_UNSHIPPED = "select coalesce(sum(unshipped), 0)::bigint from report.history_lag"
# Carriers whose regulation wants a confirmed opt-in before every one-time purchase.
DEMO_ONE_TIME_OPTIN_CARRIERS = (
    "select carrier from report.list_carrier_rules() where coalesce((rules->>'optin_one_time')::boolean, false)"
)
# Session-local helpers (pg_temp: they vanish with the connection and touch no schema): each calls
# one api.* function and turns a refusal into a document, so one refused row does not undo a batch.
DEMO_TRY_FUNCTIONS = """
create function pg_temp.try_subscribe(m text, n text, p text, plan text, k text) returns jsonb language plpgsql as $$
begin return api.subscribe(m, n, p, plan, k);
exception when others then return jsonb_build_object('error', sqlstate, 'message', sqlerrm); end $$;
create function pg_temp.try_confirm(m text, o bigint, pin text) returns jsonb language plpgsql as $$
begin return api.confirm_optin(m, o, pin);
exception when others then return jsonb_build_object('error', sqlstate, 'message', sqlerrm); end $$;
create function pg_temp.try_request_optin(m text, n text, p text, k text) returns jsonb language plpgsql as $$
begin return api.request_optin(m, n, p, k);
exception when others then return jsonb_build_object('error', sqlstate, 'message', sqlerrm); end $$;
create function pg_temp.try_charge(m text, n text, p text, k text, meta jsonb) returns jsonb language plpgsql as $$
begin return api.charge(m, n, p, k, null, meta);
exception when others then return jsonb_build_object('error', sqlstate, 'message', sqlerrm); end $$;
create function pg_temp.try_refund(m text, id bigint, k text) returns jsonb language plpgsql as $$
begin return api.refund(m, id, k, null, 'customer complaint');
exception when others then return jsonb_build_object('error', sqlstate, 'message', sqlerrm); end $$;
create function pg_temp.try_cancel(m text, id bigint) returns jsonb language plpgsql as $$
begin return api.cancel_subscription(m, id, 'user_request');
exception when others then return jsonb_build_object('error', sqlstate, 'message', sqlerrm); end $$;
"""
# Batches of those helpers over unnested columns, numbered so the documents come back in input order.
DEMO_TRY_SUBSCRIBE = (
    "select t.i, pg_temp.try_subscribe(t.m, t.n, t.p, t.plan, t.k) "
    "from unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[]) with ordinality t(m, n, p, plan, k, i)"
)
DEMO_TRY_CONFIRM = (
    "select t.i, pg_temp.try_confirm(t.m, t.o, t.pin) "
    "from unnest(%s::text[], %s::bigint[], %s::text[]) with ordinality t(m, o, pin, i)"
)
DEMO_TRY_REQUEST_OPTIN = (
    "select t.i, pg_temp.try_request_optin(t.m, t.n, t.p, t.k) "
    "from unnest(%s::text[], %s::text[], %s::text[], %s::text[]) with ordinality t(m, n, p, k, i)"
)
DEMO_TRY_CHARGE = (
    "select t.i, pg_temp.try_charge(t.m, t.n, t.p, t.k, t.meta) "
    "from unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::jsonb[]) with ordinality t(m, n, p, k, meta, i)"
)
DEMO_TRY_CANCEL = (
    "select t.i, pg_temp.try_cancel(t.m, t.s) from unnest(%s::text[], %s::bigint[]) with ordinality t(m, s, i)"
)
DEMO_TRY_REFUND = (
    "select t.i, pg_temp.try_refund(t.m, t.p, t.k) "
    "from unnest(%s::text[], %s::bigint[], %s::text[]) with ordinality t(m, p, k, i)"
)

# --- sharded deployments (the front database; carrierpay/shards owns the front's schema) ---
SHARD_MAP = "select partition, connstr from front.list_partitions()"
# `carrierpay demo --shards N` (carrierpay/demo_shards.py). Each partition's demo database, as the
# single-node demo's: commits need not wait for the WAL flush, and the demo's local webhook receiver
# is plain http (allowed here for every session, since the front's admin calls set no session setting).
DEMO_SHARD_SETTINGS = (
    "alter database {} set synchronous_commit = off",
    "alter database {} set carrierpay.webhook_allow_http = on",
)
# The partition the front routes each number to (as the front's api.* twins route them), on the front.
DEMO_PARTITION_OF_NUMBERS = (
    "select n, front.msisdn_hash(n) & (front.partition_count() - 1) from unnest(%s::text[]) n"
)
# Merchant HTTP API (`carrierpay api serve`, a carrierpay_gateway login; db/procedures/230_http_api.sql).
# HTTP_AUTHENTICATE runs first in each operation's transaction: it sets the token's merchant role for
# the rest of the transaction, so the api.* call after it acts as that merchant and nobody else.
HTTP_ISSUE_TOKEN = "select gateway.issue_token(%(client_id)s, %(secret)s, %(scope)s, %(ttl)s)::text"
HTTP_AUTHENTICATE = """
    select a.merchant, a.default_product, pg_catalog.set_config('role', a.db_role, true), a.client_id,
           a.requests_per_second
    from gateway.authenticate_client(%(token)s, %(scope)s) a
"""
# createPayment, the busiest operation, is pipelined: the token's merchant and default product reach
# the api.* call through transaction-local settings instead of through the client, so the call need
# not wait for the authentication's answer and BEGIN, both statements and COMMIT go in one round
# trip. Should the authentication fail, the pipeline aborts the rest of the transaction.
HTTP_AUTHENTICATE_LOCAL = """
    select pg_catalog.set_config('role', a.db_role, true),
           pg_catalog.set_config('carrierpay.http_merchant', a.merchant, true),
           pg_catalog.set_config('carrierpay.http_default_product', coalesce(a.default_product, ''), true),
           a.client_id, a.requests_per_second
    from gateway.authenticate_client(%(token)s, %(scope)s) a
"""
HTTP_CREATE_PAYMENT_LOCAL = """
    select api.create_payment(pg_catalog.current_setting('carrierpay.http_merchant'), %(request)s::jsonb,
                              nullif(pg_catalog.current_setting('carrierpay.http_default_product'), ''))::text
"""
HTTP_READ_PAYMENT = "select api.read_payment(%(merchant)s, %(paymentId)s)::text"
HTTP_LIST_PAYMENTS = """
    select r->>'total', r->>'last_index', (r->'payments')::text
    from api.list_payments(%(merchant)s, %(from)s::timestamptz, %(to)s::timestamptz, %(statuses)s::text[],
                           %(order)s, %(page)s::integer, %(per_page)s::integer, %(merchant_identifier)s) r
"""
HTTP_PREPARE_PAYMENT = "select api.prepare_payment(%(merchant)s, %(request)s::jsonb, %(default_product)s)::text"
HTTP_VALIDATE_PAYMENT = "select api.validate_payment(%(merchant)s, %(payment_id)s, %(request)s::jsonb)"
HTTP_CONFIRM_PAYMENT = "select api.confirm_payment(%(merchant)s, %(payment_id)s, %(request)s::jsonb)"
HTTP_CANCEL_PAYMENT = "select api.cancel_payment(%(merchant)s, %(payment_id)s, %(request)s::jsonb)"
HTTP_CREATE_REFUND = "select api.create_refund(%(merchant)s, %(paymentId)s, %(request)s::jsonb)::text"
HTTP_READ_REFUND = "select api.read_refund(%(merchant)s, %(paymentId)s, %(refundId)s)::text"
HTTP_READ_REMAINING_AMOUNT = "select api.read_remaining_amount(%(merchant)s, %(paymentId)s)::text"
HTTP_LIST_REFUNDS = """
    select r->>'total', r->>'last_index', (r->'items')::text
    from api.list_refunds(%(merchant)s, %(payment_id)s, %(from)s::timestamptz, %(to)s::timestamptz,
                          %(statuses)s::text[], %(order)s, %(page)s::integer, %(per_page)s::integer,
                          %(merchant_identifier)s) r
"""
# carrierpay's extensions: subscriptions, consents, balance checks.
HTTP_CREATE_SUBSCRIPTION = "select api.create_subscription(%(merchant)s, %(request)s::jsonb)::text"
HTTP_READ_SUBSCRIPTION = "select api.read_subscription(%(merchant)s, %(subscriptionId)s)::text"
HTTP_CANCEL_SUBSCRIPTION = "select api.stop_subscription(%(merchant)s, %(subscriptionId)s, %(request)s::jsonb)::text"
HTTP_LIST_SUBSCRIPTIONS = """
    select r->>'total', r->>'last_index', (r->'items')::text
    from api.list_subscriptions(%(merchant)s, %(statuses)s::text[], %(page)s::integer, %(per_page)s::integer) r
"""
HTTP_CREATE_CONSENT = "select api.create_consent(%(merchant)s, %(request)s::jsonb)::text"
HTTP_VALIDATE_CONSENT = "select api.validate_consent(%(merchant)s, %(consentId)s, %(request)s::jsonb)::text"
HTTP_CREATE_BALANCE_CHECK = "select api.create_balance_check(%(merchant)s, %(request)s::jsonb)::text"
HTTP_READ_BALANCE_CHECK = "select api.read_balance_check(%(merchant)s, %(balanceCheckId)s)::text"

# Operators: API clients of the merchant HTTP API.
ADD_API_CLIENT = "select admin.add_api_client(%(merchant)s, %(scopes)s, %(default_product)s)"
SET_API_CLIENT_RATE_LIMIT = "select admin.set_api_client_rate_limit(%(client_id)s, %(requests_per_second)s)"
LIST_API_CLIENTS = "select * from admin.list_api_clients(%(merchant)s)"
REVOKE_API_CLIENT = "select admin.revoke_api_client(%(client_id)s)"
# Number lookup (carrierpay/adapters/lookup.py): a network's answer about a number, kept for its lifetime.
RECORD_NUMBER_LOOKUP = "select adapter.record_number_lookup(%(msisdn)s, %(mcc)s, %(mnc)s, %(ttl_s)s)"
