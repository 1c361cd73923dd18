-- Reporting views for DBAs (role carrierpay_reporter). They read the live tables, so they are
-- near real time; money columns are minor units with their currency.
-- Views are dropped and recreated so a changed column list applies cleanly.

drop view if exists report.revenue, report.success_by_carrier, report.success_by_hour, report.retries_per_success,
    report.churn, report.refunds, report.open_calls, report.ledger_balances, report.unbalanced_journals cascade;

-- Collected, refunded and net revenue per carrier, country, merchant and currency.
create view report.revenue as
select c.code as carrier, c.country, m.code as merchant, p.currency,
       count(*) filter (where p.collected_minor > 0) as payments,
       sum(p.collected_minor)::bigint as collected_minor,
       sum(p.refunded_minor)::bigint as refunded_minor,
       sum(p.collected_minor - p.refunded_minor)::bigint as net_minor
from cp.procedure p
join cp.carrier c using (carrier_id)
join cp.merchant m using (merchant_id)
where p.kind = 'charge'
group by c.code, c.country, m.code, p.currency;

-- Charge outcomes per carrier and country: attempts, successes, success rate, step-downs.
create view report.success_by_carrier as
select c.code as carrier, c.country,
       count(*) filter (where p.status <> 'pending') as attempts,
       count(*) filter (where p.status in ('succeeded', 'partially_refunded', 'refunded')) as succeeded,
       count(*) filter (where p.status = 'failed') as failed,
       count(*) filter (where p.status in ('in_flight', 'unknown')) as open,
       round(100.0 * count(*) filter (where p.status in ('succeeded', 'partially_refunded', 'refunded'))
             / nullif(count(*) filter (where p.status in ('succeeded', 'partially_refunded', 'refunded', 'failed')), 0), 1)
           as success_pct,
       count(*) filter (where p.subscription_id is not null
                        and p.price_point_id is distinct from s.price_point_id) as step_downs
from cp.procedure p
join cp.carrier c using (carrier_id)
left join cp.subscription s on s.subscription_id = p.subscription_id
where p.kind = 'charge'
group by c.code, c.country;

-- Success rate per carrier and subscriber-local hour (what best-hour retries learn from).
create view report.success_by_hour as
select c.code as carrier, t.local_hour, sum(t.attempts)::bigint as attempts, sum(t.successes)::bigint as successes,
       round(100.0 * sum(t.successes) / nullif(sum(t.attempts), 0), 1) as success_pct
from (select carrier_id, local_hour, attempts, successes from cp.hour_stats
      union all
      select carrier_id, local_hour, attempts, successes from cp.hour_stats_delta) t
join cp.carrier c using (carrier_id)
group by c.code, t.local_hour;

-- Renewal charge attempts per successful renewal, per carrier.
create view report.retries_per_success as
select c.code as carrier,
       count(*) as renewal_attempts,
       count(*) filter (where p.status in ('succeeded', 'partially_refunded', 'refunded')) as renewals_collected,
       round(count(*)::numeric / nullif(count(*) filter (where p.status in ('succeeded', 'partially_refunded',
                                                                             'refunded')), 0), 2) as attempts_per_success
from cp.procedure p join cp.carrier c using (carrier_id)
where p.kind = 'charge' and p.subscription_id is not null
group by c.code;

-- Subscriptions by status per carrier and merchant, with cancellations by reason.
create view report.churn as
select c.code as carrier, m.code as merchant,
       count(*) as subscriptions,
       count(*) filter (where s.status = 'active') as active,
       count(*) filter (where s.status in ('retrying', 'grace')) as in_retry_or_grace,
       count(*) filter (where s.status = 'suspended') as suspended,
       count(*) filter (where s.status = 'cancelled') as cancelled,
       count(*) filter (where s.cancel_reason = 'unpaid') as cancelled_unpaid,
       count(*) filter (where s.status = 'pending_optin') as pending_optin
from cp.subscription s join cp.carrier c using (carrier_id) join cp.merchant m using (merchant_id)
group by c.code, m.code;

-- Refunds per carrier and merchant.
create view report.refunds as
select c.code as carrier, m.code as merchant, r.currency,
       count(*) as refunds,
       count(*) filter (where r.status = 'succeeded') as succeeded,
       count(*) filter (where r.status = 'failed') as failed,
       coalesce(sum(r.amount_minor) filter (where r.status = 'succeeded'), 0)::bigint as refunded_minor
from cp.procedure r join cp.carrier c using (carrier_id) join cp.merchant m using (merchant_id)
where r.kind = 'refund'
group by c.code, m.code, r.currency;

-- Carrier calls not yet settled: queued, leased, awaiting a callback or report, unknown.
create view report.open_calls as
select c.code as carrier, k.operation, k.status, count(*) as calls,
       min(k.created_at) as oldest, max(k.reconcile_attempts) as max_reconcile_attempts
from cp.carrier_call k join cp.carrier c using (carrier_id)
where k.status in ('queued', 'leased', 'awaiting_result', 'unknown')
group by c.code, k.operation, k.status;

-- Balance of every ledger account (debit positive).
create view report.ledger_balances as
select a.kind, coalesce(c.code, m.code, a.country, 'platform') as owner, a.currency,
       coalesce(sum(e.amount_minor), 0)::bigint as balance_minor
from cp.ledger_account a
left join cp.ledger_entry e using (account_id)
left join cp.carrier c on c.carrier_id = a.carrier_id
left join cp.merchant m on m.merchant_id = a.merchant_id
group by a.account_id, a.kind, c.code, m.code, a.country, a.currency;

-- Journals that do not balance: must always be empty.
create view report.unbalanced_journals as
select journal_id, sum(amount_minor)::bigint as off_by_minor
from cp.ledger_entry group by journal_id having sum(amount_minor) <> 0;

grant select on report.revenue, report.success_by_carrier, report.success_by_hour, report.retries_per_success,
    report.churn, report.refunds, report.open_calls, report.ledger_balances, report.unbalanced_journals
to carrierpay_reporter, carrierpay_admin;
