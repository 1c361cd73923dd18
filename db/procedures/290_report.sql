-- Reporting views for DBAs (role carrierpay_reporter). They read the live tables, so they are
-- near real time; money columns are minor units with their currency.
-- Views are dropped and recreated so a changed column list applies cleanly.

drop view if exists report.revenue, report.success_by_carrier, report.success_by_hour, report.retries_per_success,
    report.churn, report.refunds, report.open_calls, report.calls_needing_operator, report.ledger_balances,
    report.unbalanced_journals cascade;

-- Collected, refunded and net revenue per carrier, country, merchant and currency, from the final charges
-- and refunds counted in cp.rollup_procedure (db/procedures/280_rollup.sql): as of the scheduler's last
-- fold, a few hundred rows whatever the number of payments or hours (a refunded charge stays collected).
create view report.revenue as
select c.code as carrier, c.country, m.code as merchant, r.currency,
       coalesce(sum(r.procedures) filter (where r.kind = 'charge'), 0)::bigint as payments,
       coalesce(sum(r.collected_minor) filter (where r.kind = 'charge'), 0)::bigint as collected_minor,
       coalesce(sum(r.amount_minor) filter (where r.kind = 'refund'), 0)::bigint as refunded_minor,
       (coalesce(sum(r.collected_minor) filter (where r.kind = 'charge'), 0)
        - coalesce(sum(r.amount_minor) filter (where r.kind = 'refund'), 0))::bigint as net_minor
from cp.rollup_procedure r
join cp.carrier c on c.carrier_id = r.carrier_id
join cp.merchant m on m.merchant_id = r.merchant_id
where r.outcome = 'succeeded' and r.kind in ('charge', 'refund')
group by c.code, c.country, m.code, r.currency;

-- Charges and refunds not final yet, found through their open calls only (the call queue, and the
-- partial index carrier_call_to_reconcile for calls unknown or awaiting a result), never by scanning the
-- payments: what the report views add to the final ones counted in cp.rollup_procedure.
drop view if exists cp.open_payment cascade;
create view cp.open_payment as
select p.procedure_id, p.kind, p.status, p.carrier_id, p.merchant_id, p.currency, p.subscription_id,
       p.period_index, p.price_point_id
from (select (select c.procedure_id from cp.carrier_call c where c.call_id = q.call_id) as procedure_id
      from cp.call_queue q
      union
      select c.procedure_id from cp.carrier_call c where c.next_reconcile_at is not null) o
-- one row by key per open procedure (limit 1 keeps it a lookup, never a join over the payments)
cross join lateral (select * from cp.procedure x where x.procedure_id = o.procedure_id limit 1) p
where p.kind in ('charge', 'refund') and p.status in ('pending', 'in_flight', 'unknown');

-- Charge outcomes per carrier and country: attempts, successes, success rate, step-downs. Final charges
-- come from the rollup (as of the last fold), open ones from their open calls.
create view report.success_by_carrier as
with final as (
    select r.carrier_id,
           sum(r.procedures) filter (where r.outcome = 'succeeded') as succeeded,
           sum(r.procedures) filter (where r.outcome = 'failed') as failed,
           sum(r.step_downs) as step_downs
    from cp.rollup_procedure r where r.kind = 'charge' group by r.carrier_id
), open as (
    select o.carrier_id, count(*) filter (where o.status <> 'pending') as open
    from cp.open_payment o where o.kind = 'charge' group by o.carrier_id
)
select c.code as carrier, c.country,
       (coalesce(f.succeeded, 0) + coalesce(f.failed, 0) + coalesce(o.open, 0))::bigint as attempts,
       coalesce(f.succeeded, 0)::bigint as succeeded,
       coalesce(f.failed, 0)::bigint as failed,
       coalesce(o.open, 0)::bigint as open,
       round(100.0 * f.succeeded / nullif(coalesce(f.succeeded, 0) + coalesce(f.failed, 0), 0), 1) as success_pct,
       coalesce(f.step_downs, 0)::bigint as step_downs
from cp.carrier c
left join final f on f.carrier_id = c.carrier_id
left join open o on o.carrier_id = c.carrier_id
where f.carrier_id is not null or o.carrier_id is not null;

-- Success rate per carrier and subscriber-local hour (what best-hour retries learn from).
create view report.success_by_hour as
select c.code as carrier, t.local_hour, sum(t.attempts)::bigint as attempts, sum(t.successes)::bigint as successes,
       round(100.0 * sum(t.successes) / nullif(sum(t.attempts), 0), 1) as success_pct
from (select carrier_id, local_hour, attempts, successes from cp.hour_stats
      union all
      select carrier_id, local_hour, attempts, successes from cp.hour_stats_delta) t
join cp.carrier c using (carrier_id)
group by c.code, t.local_hour;

-- Subscription charge attempts per collected one, per carrier (final ones from the rollup, open ones from
-- their open calls).
create view report.retries_per_success as
with final as (
    select r.carrier_id, sum(r.subscription_charges) as attempts,
           sum(r.subscription_charges) filter (where r.outcome = 'succeeded') as collected
    from cp.rollup_procedure r where r.kind = 'charge' group by r.carrier_id
), open as (
    select o.carrier_id, count(*) as attempts
    from cp.open_payment o where o.kind = 'charge' and o.subscription_id is not null group by o.carrier_id
), counts as (
    select c.code as carrier, (coalesce(f.attempts, 0) + coalesce(o.attempts, 0))::bigint as renewal_attempts,
           coalesce(f.collected, 0)::bigint as renewals_collected
    from cp.carrier c
    left join final f on f.carrier_id = c.carrier_id
    left join open o on o.carrier_id = c.carrier_id
)
select carrier, renewal_attempts, renewals_collected,
       round(renewal_attempts::numeric / nullif(renewals_collected, 0), 2) as attempts_per_success
from counts where renewal_attempts > 0;

-- Subscriptions by status per carrier and merchant, with cancellations by reason: the counts as of the
-- last fold plus what changed since (cp.tg_subscription__counts_created and _changed), never a scan of
-- the subscriptions.
create view report.churn as
select c.code as carrier, m.code as merchant,
       sum(s.subscriptions)::bigint as subscriptions,
       coalesce(sum(s.subscriptions) filter (where s.status = 'active'), 0)::bigint as active,
       coalesce(sum(s.subscriptions) filter (where s.status in ('retrying', 'grace')), 0)::bigint as in_retry_or_grace,
       coalesce(sum(s.subscriptions) filter (where s.status = 'suspended'), 0)::bigint as suspended,
       coalesce(sum(s.subscriptions) filter (where s.status = 'cancelled'), 0)::bigint as cancelled,
       coalesce(sum(s.subscriptions) filter (where s.unpaid), 0)::bigint as cancelled_unpaid,
       coalesce(sum(s.subscriptions) filter (where s.status = 'pending_optin'), 0)::bigint as pending_optin
from (select carrier_id, merchant_id, status, unpaid, subscriptions from cp.subscription_count
      union all
      select carrier_id, merchant_id, status, unpaid, subscriptions from cp.subscription_count_delta) s
join cp.carrier c using (carrier_id) join cp.merchant m using (merchant_id)
group by c.code, m.code
having sum(s.subscriptions) <> 0;

-- Refunds per carrier and merchant (final ones from the rollup, open ones from their open calls).
create view report.refunds as
with counts as (
    select r.carrier_id, r.merchant_id, r.currency, r.procedures as refunds,
           case when r.outcome = 'succeeded' then r.procedures else 0 end as succeeded,
           case when r.outcome = 'failed' then r.procedures else 0 end as failed,
           case when r.outcome = 'succeeded' then r.amount_minor else 0 end as refunded_minor
    from cp.rollup_procedure r where r.kind = 'refund'
    union all
    select o.carrier_id, coalesce(o.merchant_id, 0), o.currency, 1, 0, 0, 0
    from cp.open_payment o where o.kind = 'refund'
)
select c.code as carrier, m.code as merchant, x.currency,
       sum(x.refunds)::bigint as refunds, sum(x.succeeded)::bigint as succeeded, sum(x.failed)::bigint as failed,
       sum(x.refunded_minor)::bigint as refunded_minor
from counts x join cp.carrier c using (carrier_id) join cp.merchant m using (merchant_id)
group by c.code, m.code, x.currency;

-- Carrier calls not yet settled: queued, leased, awaiting a callback or report, unknown. Found through
-- the queue (queued and leased calls) and the partial index carrier_call_to_reconcile (calls unknown or
-- awaiting a result always carry a next_reconcile_at), never by scanning the calls.
create view report.open_calls as
select c.code as carrier, k.operation, k.status, count(*) as calls,
       min(k.created_at) as oldest, max(k.reconcile_attempts) as max_reconcile_attempts
from (select x.carrier_id, x.operation, x.status, x.created_at, x.reconcile_attempts
      from cp.call_queue q
      -- by key per queued call (limit 1 keeps it a lookup, never a join over the calls)
      cross join lateral (select * from cp.carrier_call c where c.call_id = q.call_id limit 1) x
      where x.status in ('queued', 'leased')
      union all
      select x.carrier_id, x.operation, x.status, x.created_at, x.reconcile_attempts
      from cp.carrier_call x
      where x.next_reconcile_at is not null and x.status in ('awaiting_result', 'unknown')) k
join cp.carrier c using (carrier_id)
group by c.code, k.operation, k.status;

-- Carrier calls still unsettled after their third reconciliation turn (5 minutes, 1 hour and a day
-- after their outcome went missing): no route the carrier offers (status query, result file, a
-- deduplicated repeat, a late callback) has answered, so an operator has to find out and record
-- it with admin.settle_call (`carrierpay calls settle`).
-- The operator queue: calls whose outcome reconciliation has not established after the carrier's limit of
-- turns (cp.operator_after_turns), e.g. a charge on a carrier with neither a status query nor a result
-- file, which would otherwise wait on a daily back-off forever. `carrierpay reconcile pending` lists it.
create view report.calls_needing_operator as
select c.call_id, k.code as carrier, c.operation, c.status, c.correlator, c.carrier_ref,
       p.procedure_id, p.kind as procedure_kind, p.status as procedure_status, p.amount_minor, p.currency,
       m.code as merchant, c.reconcile_attempts, c.created_at, c.next_reconcile_at
from cp.carrier_call c
join cp.carrier k using (carrier_id)
join cp.procedure p using (procedure_id)
left join cp.merchant m on m.merchant_id = p.merchant_id
where c.next_reconcile_at is not null  -- the partial index carrier_call_to_reconcile: unsettled calls only
  and c.status in ('unknown', 'awaiting_result') and c.reconcile_attempts >= cp.operator_after_turns(k.spec);

-- Ledger entries sched.fold_ledger has not folded yet: those of journals past its watermark (by the
-- entries' primary key) and of journals it passed before they were visible that have appeared since.
-- What the fold-backed ledger views add to the fold, so they are exact at any time. The upper bound
-- (the last entry's journal, read from the end of the primary key) changes no row: it makes the range
-- one the planner sizes as narrow, so it reads it by key instead of scanning every entry.
drop view if exists cp.ledger_unfolded_entry cascade;
create view cp.ledger_unfolded_entry as
select e.journal_id, e.account_id, e.amount_minor
from cp.ledger_entry e
where e.journal_id > (select f.checked_through from cp.ledger_fold f)
  and e.journal_id <= (select max(x.journal_id) from cp.ledger_entry x)
union all
select e.journal_id, e.account_id, e.amount_minor
from cp.ledger_straggler s join cp.ledger_entry e on e.journal_id = s.journal_id;

-- Balance of every ledger account (debit positive): what sched.fold_ledger folded plus the entries it
-- has not folded yet; exact at any time, reading the account rows and the journals since the last fold.
drop view if exists cp.ledger_account_balance cascade;
create view cp.ledger_account_balance as
select a.account_id, (coalesce(b.balance_minor, 0) + coalesce(u.amount_minor, 0))::bigint as balance_minor
from cp.ledger_account a
left join cp.ledger_fold_balance b on b.account_id = a.account_id
left join (select x.account_id, sum(x.amount_minor) as amount_minor from cp.ledger_unfolded_entry x
           group by x.account_id) u on u.account_id = a.account_id;

-- Balance of every ledger account (debit positive), from the ledger fold (cp.ledger_account_balance).
create view report.ledger_balances as
select a.kind, coalesce(c.code, m.code, a.country, 'platform') as owner, a.currency, b.balance_minor
from cp.ledger_account a
join cp.ledger_account_balance b on b.account_id = a.account_id
left join cp.carrier c on c.carrier_id = a.carrier_id
left join cp.merchant m on m.merchant_id = a.merchant_id;

-- Journals that do not balance: must always be empty. Those sched.fold_ledger found when it folded them,
-- and those among the journals it has not folded yet. A journal is checked at the commit that posts it
-- and cannot change afterwards, so a row here means a journal was written with the ledger's triggers
-- off (or they are wrong); report.ledger_audit re-checks everything the long way.
create view report.unbalanced_journals as
select u.journal_id, u.off_by_minor from cp.ledger_unbalanced u
union all
select x.journal_id, sum(x.amount_minor)::bigint
from cp.ledger_unfolded_entry x group by x.journal_id having sum(x.amount_minor) <> 0;

-- How far the ledger fold has come: the last journal id folded, when (business time), how many journals
-- it folded, the ids it passed before they were visible, and the unbalanced journals it found (must be 0).
drop view if exists report.ledger_fold_progress;
create view report.ledger_fold_progress as
select f.checked_through, f.folded_at, f.journals, (select count(*) from cp.ledger_straggler) as stragglers,
       (select count(*) from cp.ledger_unbalanced) as unbalanced_found
from cp.ledger_fold f;

-- The ledger checked the long way, for audits: every account whose entries, all summed, differ from
-- report.ledger_balances, and every journal whose entries do not sum to zero that
-- report.unbalanced_journals does not list. Must always be empty: a row means entries were changed
-- behind the immutability triggers after the fold read them. A full scan of the entries: for audits
-- and the benchmark's checks, not for a dashboard.
drop view if exists report.ledger_audit;
create view report.ledger_audit as
with scanned as (
    select e.account_id, sum(e.amount_minor) as balance_minor from cp.ledger_entry e group by e.account_id
)
select 'account balance' as finding, b.account_id::bigint as id, b.balance_minor as reported_minor,
       coalesce(s.balance_minor, 0)::bigint as scanned_minor
from cp.ledger_account_balance b left join scanned s on s.account_id = b.account_id
where b.balance_minor <> coalesce(s.balance_minor, 0)
union all
select 'unbalanced journal not reported', e.journal_id, null, sum(e.amount_minor)::bigint
from cp.ledger_entry e
group by e.journal_id
having sum(e.amount_minor) <> 0
   and not exists (select from report.unbalanced_journals u where u.journal_id = e.journal_id);

-- Rows of the payment tables whose parent row is missing: must always be empty. These references
-- carry no foreign keys (cp.tg_parent__never_deleted says why); this is their check. A full scan: for
-- audits and the benchmark's money checks, not for a dashboard.
drop view if exists report.dangling_references;
create view report.dangling_references as
select x.child, x.reference, count(*)::bigint as rows
from (
    select 'procedure' as child, 'subscriber_id' as reference from cp.procedure p
    where not exists (select from cp.subscriber s where s.subscriber_id = p.subscriber_id)
    union all
    select 'procedure', 'merchant_id' from cp.procedure p
    where p.merchant_id is not null and not exists (select from cp.merchant m where m.merchant_id = p.merchant_id)
    union all
    select 'procedure', 'carrier_id' from cp.procedure p
    where not exists (select from cp.carrier c where c.carrier_id = p.carrier_id)
    union all
    select 'procedure', 'product_id' from cp.procedure p
    where p.product_id is not null and not exists (select from cp.product r where r.product_id = p.product_id)
    union all
    select 'procedure', 'price_point_id' from cp.procedure p
    where p.price_point_id is not null
      and not exists (select from cp.price_point r where r.price_point_id = p.price_point_id)
    union all
    select 'procedure', 'subscription_id' from cp.procedure p
    where p.subscription_id is not null
      and not exists (select from cp.subscription s where s.subscription_id = p.subscription_id)
    union all
    select 'procedure', 'parent_id' from cp.procedure p
    where p.parent_id is not null and not exists (select from cp.procedure r where r.procedure_id = p.parent_id)
    union all
    select 'carrier_call', 'procedure_id' from cp.carrier_call c
    where not exists (select from cp.procedure p where p.procedure_id = c.procedure_id)
    union all
    select 'call_queue', 'call_id' from cp.call_queue q
    where not exists (select from cp.carrier_call c where c.call_id = q.call_id)
    union all
    select 'journal', 'procedure_id' from cp.journal j
    where not exists (select from cp.procedure p where p.procedure_id = j.procedure_id)
    union all
    select 'ledger_entry', 'journal_id' from cp.ledger_entry e
    where not exists (select from cp.journal j where j.journal_id = e.journal_id)
    union all
    select 'ledger_entry', 'account_id' from cp.ledger_entry e
    where not exists (select from cp.ledger_account a where a.account_id = e.account_id)
    union all
    select 'entitlement', 'procedure_id' from cp.entitlement e
    where not exists (select from cp.procedure p where p.procedure_id = e.procedure_id)
    union all
    select 'merchant_notification', 'merchant_id' from cp.merchant_notification n
    where not exists (select from cp.merchant m where m.merchant_id = n.merchant_id)
    union all
    select 'carrier_log', 'call_id' from cp.carrier_log l
    where not exists (select from cp.carrier_call c where c.call_id = l.call_id)
) x
group by x.child, x.reference;

-- One row per carrier (and its country and currency): what a carrier brought in over the life of
-- the database. Charges: every charge procedure that reached the carrier (not still pending);
-- renewals: subscription charges for a period after the first (period_index >= 1); retries per
-- success: subscription charge attempts beyond the successful ones, per successful one; step-downs:
-- collected subscription charges at a lower price point than the one subscribed to. Amounts are
-- minor units of the carrier's currency. Final charges and refunds are read from cp.rollup_procedure (as
-- of the scheduler's last fold), open ones through their open calls (cp.open_payment); subscriptions
-- from their counts (cp.subscription_count and the deltas not folded yet), exact at any time. Used by `carrierpay demo` for its final report.
drop view if exists report.carrier_summary;
create view report.carrier_summary as
with charges as (
    select r.carrier_id,
           sum(r.procedures) filter (where r.outcome = 'succeeded') as charges_collected,
           sum(r.procedures) filter (where r.outcome = 'failed') as charges_failed,
           sum(r.collected_minor) as collected_minor,
           sum(r.renewals) as renewal_attempts,
           sum(r.renewals) filter (where r.outcome = 'succeeded') as renewals_collected,
           sum(r.subscription_charges) as subscription_attempts,
           sum(r.subscription_charges) filter (where r.outcome = 'succeeded') as subscription_collected,
           sum(r.step_downs) filter (where r.outcome = 'succeeded') as step_downs
    from cp.rollup_procedure r where r.kind = 'charge'
    group by r.carrier_id
), open as (
    select o.carrier_id, count(*) filter (where o.kind = 'charge' and o.status <> 'pending') as charges,
           count(*) filter (where o.kind = 'refund') as refunds
    from cp.open_payment o group by o.carrier_id
), refunds as (
    select r.carrier_id, sum(r.procedures) as refunds,
           sum(r.procedures) filter (where r.outcome = 'succeeded') as refunds_succeeded,
           sum(r.amount_minor) filter (where r.outcome = 'succeeded') as refunded_minor
    from cp.rollup_procedure r where r.kind = 'refund'
    group by r.carrier_id
), subs as (
    select carrier_id, sum(subscriptions)::bigint as subscriptions,
           sum(subscriptions) filter (where status = 'active')::bigint as active,
           sum(subscriptions) filter (where status in ('retrying', 'grace'))::bigint as in_retry_or_grace,
           sum(subscriptions) filter (where status = 'suspended')::bigint as suspended,
           sum(subscriptions) filter (where status = 'cancelled')::bigint as cancelled,
           sum(subscriptions) filter (where status = 'pending_optin')::bigint as pending_optin
    from (select carrier_id, status, subscriptions from cp.subscription_count
          union all
          select carrier_id, status, subscriptions from cp.subscription_count_delta) s
    group by carrier_id
)
select k.code as carrier, k.country, k.currency,
       (coalesce(c.charges_collected, 0) + coalesce(c.charges_failed, 0) + coalesce(o.charges, 0))::bigint
           as charges_attempted,
       coalesce(c.charges_collected, 0)::bigint as charges_collected,
       coalesce(c.charges_failed, 0)::bigint as charges_failed,
       round(100.0 * c.charges_collected / nullif(coalesce(c.charges_collected, 0) + coalesce(c.charges_failed, 0), 0), 1)
           as success_pct,
       coalesce(c.collected_minor, 0)::bigint as collected_minor,
       coalesce(r.refunded_minor, 0)::bigint as refunded_minor,
       (coalesce(c.collected_minor, 0) - coalesce(r.refunded_minor, 0))::bigint as net_minor,
       coalesce(c.renewal_attempts, 0)::bigint as renewal_attempts,
       coalesce(c.renewals_collected, 0)::bigint as renewals_collected,
       round(100.0 * c.renewals_collected / nullif(c.renewal_attempts, 0), 1) as renewal_success_pct,
       round((c.subscription_attempts - coalesce(c.subscription_collected, 0))::numeric
             / nullif(c.subscription_collected, 0), 2) as retries_per_success,
       coalesce(c.step_downs, 0)::bigint as step_downs,
       (coalesce(r.refunds, 0) + coalesce(o.refunds, 0))::bigint as refunds,
       coalesce(r.refunds_succeeded, 0)::bigint as refunds_succeeded,
       coalesce(s.subscriptions, 0) as subscriptions,
       coalesce(s.active, 0) as active,
       coalesce(s.in_retry_or_grace, 0) as in_retry_or_grace,
       coalesce(s.suspended, 0) as suspended,
       coalesce(s.cancelled, 0) as cancelled,
       coalesce(s.pending_optin, 0) as pending_optin
from cp.carrier k
left join charges c on c.carrier_id = k.carrier_id
left join open o on o.carrier_id = k.carrier_id
left join refunds r on r.carrier_id = k.carrier_id
left join subs s on s.carrier_id = k.carrier_id;


-- Carrier answers that contradicted what we held and so changed nothing (cp.call_conflict): a
-- result for a call already settled the other way or for another amount, in another currency, or
-- for a call never sent. Each needs a person: a carrier bug, a forged callback with a leaked key,
-- or a real charge we did not book.
drop view if exists report.call_conflicts;
create view report.call_conflicts as
select x.conflict_id, x.recorded_at, c.code as carrier, x.kind, k.operation, k.correlator, x.call_id, x.procedure_id,
       x.call_status as call_status_then, k.status as call_status_now, p.status as procedure_status,
       p.amount_minor, p.collected_minor, p.currency,
       x.reported->>'outcome' as reported_outcome, x.reported->>'reason' as reported_reason,
       x.reported->'amount_minor' as reported_amount_minor, x.reported->>'currency' as reported_currency,
       x.reported->>'carrier_ref' as reported_carrier_ref, x.reported
from cp.call_conflict x
join cp.carrier c on c.carrier_id = x.carrier_id
join cp.carrier_call k on k.call_id = x.call_id
join cp.procedure p on p.procedure_id = x.procedure_id;


-- Webhook notifications per merchant and delivery status, with the earliest next attempt of those
-- still pending: whether merchants are being told what happened to their payments.
drop view if exists report.notifications;
create view report.notifications as
select m.code as merchant, n.status, count(*) as notifications,
       min(n.next_attempt_at) filter (where n.status = 'pending') as next_attempt_at
from cp.merchant_notification n join cp.merchant m using (merchant_id)
group by m.code, n.status;

-- The configuration one shard holds, one digest per object, so the front of a sharded deployment
-- (docs/sharding.md) can tell shards that disagree: merchants, products, price points, carriers and
-- regulation presets, keyed by their codes (ids may differ between shards). A carrier's tps is left
-- out (each shard holds its share of the carrier's budget), and a webhook secret only as a digest.
drop view if exists report.configuration;
create view report.configuration as
select pg_catalog.current_setting('carrierpay.partition', true) as partition, kind, key, pg_catalog.md5(content) as digest
from (
    select 'merchant' as kind, m.code as key,
           pg_catalog.concat_ws('|', m.name, m.db_role, m.webhook_url, pg_catalog.md5(m.webhook_secret),
                                m.platform_fee_bp) as content
    from cp.merchant m
    union all
    select 'product', m.code || '/' || p.code,
           pg_catalog.concat_ws('|', p.name, p.retry_policy, p.retry_timing, p.fixed_retry_hours::text)
    from cp.product p join cp.merchant m using (merchant_id)
    union all
    select 'price_point', m.code || '/' || p.code || '/' || coalesce(c.code, pp.country) || '/' || pp.plan::text
                          || '/' || pp.amount_minor,
           pg_catalog.concat_ws('|', pp.currency, pp.variant, pp.active)
    from cp.price_point pp join cp.product p using (product_id) join cp.merchant m using (merchant_id)
    left join cp.carrier c on c.carrier_id = pp.carrier_id
    union all
    select 'carrier', c.code,
           pg_catalog.concat_ws('|', c.name, c.country, c.mcc, c.mnc, c.currency, c.timezone, c.carrier_share_bp,
                                c.regulation_code, c.rules_override::text, (c.spec #- '{throughput,tps}')::text,
                                c.enabled, (select pg_catalog.string_agg(x.prefix, ',' order by x.prefix)
                                            from cp.carrier_prefix x where x.carrier_id = c.carrier_id))
    from cp.carrier c
    union all
    select 'regulation', r.code, pg_catalog.concat_ws('|', r.name, r.source, r.rules::text)
    from cp.regulation r
) objects;

-- Work the daemons owe at the current business time, per carrier, so a driver (the demo, a test) knows
-- when everything due has been done: queue entries leased or due, queued calls due, calls sent but
-- not settled, unsettled calls the reconciler may take now, and calls awaiting a callback or receipt.
create or replace function report.count_open_work()
returns table (carrier text, queue_due bigint, queued_due bigint, unsettled bigint, reconcilable_now bigint,
               awaiting_result bigint)
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    -- One pass over the (small) queue and one over the unsettled calls, whatever the number of
    -- carriers: tools poll this while they wait for work to drain.
    with now as (select cp.clock_now() as at),
    queue as (
        select q.carrier_id,
               count(*) filter (where q.lease_until is not null or q.available_at <= now.at) as queue_due,
               count(*) filter (where c.status = 'queued' and q.available_at <= now.at) as queued_due
        from cp.call_queue q join cp.carrier_call c using (call_id) cross join now
        group by q.carrier_id
    ),
    open as (
        select c.carrier_id,
               count(*) as unsettled,
               count(*) filter (where c.status in ('unknown', 'awaiting_result') and c.next_reconcile_at <= now.at
                                  and cp.reconcilable_now(c.status, c.sent_at, k.spec)) as reconcilable_now,
               count(*) filter (where c.status = 'awaiting_result') as awaiting_result
        from cp.carrier_call c join cp.carrier k using (carrier_id) cross join now
        where c.status in ('leased', 'awaiting_result', 'unknown')
        group by c.carrier_id
    )
    select k.code, coalesce(queue.queue_due, 0), coalesce(queue.queued_due, 0), coalesce(open.unsettled, 0),
           coalesce(open.reconcilable_now, 0), coalesce(open.awaiting_result, 0)
    from cp.carrier k
    left join queue on queue.carrier_id = k.carrier_id
    left join open on open.carrier_id = k.carrier_id
$$;

-- Procedures not final, and whether each is legitimately open: every call of theirs waits in the
-- queue for a later time (an SMS held back by quiet hours, a throttled call's next turn). An open
-- procedure that is not deferred is stuck.
create or replace function report.list_open_procedures()
returns table (procedure_id bigint, kind text, status text, deferred boolean)
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select p.procedure_id, p.kind::text, p.status::text,
           exists (select 1 from cp.carrier_call c join cp.call_queue q using (call_id)
                   where c.procedure_id = p.procedure_id and q.lease_until is null
                     and q.available_at > cp.clock_now())
    from cp.procedure p
    where p.status not in ('succeeded', 'failed', 'refunded', 'partially_refunded')
$$;

-- The regulation rules in force per carrier (cp.effective_rules), for tools that act as subscribers
-- and must follow the rules without restating them. Functions of this schema call cp functions, so
-- only the owner runs them (the views stay readable by carrierpay_reporter).
create or replace function report.list_carrier_rules()
returns table (carrier text, country text, rules jsonb)
language sql stable
set search_path = pg_catalog, cp, pg_temp
as $$
    select k.code, k.country, cp.effective_rules(k.carrier_id) from cp.carrier k order by k.code
$$;
