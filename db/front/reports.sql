-- Reports over every shard (RUN ON ALL), merged here: counts and balances added up per key, lists
-- concatenated. Each front.shard_* function returns one shard's rows; the report.* of the front
-- has the name and columns of the shard's own report.

-- Every shard's webhook notifications per merchant and status.
create or replace function front.shard_notifications()
returns table (merchant text, status text, notifications bigint, next_attempt_at timestamptz)
language plproxy
set search_path = pg_catalog, cp, pg_temp
as $$
    cluster 'carrierpay_shards';
    run on all;
    select merchant, status::text as status, notifications, next_attempt_at from report.notifications;
$$;

create or replace view report.notifications as
select merchant, status, sum(notifications)::bigint as notifications, min(next_attempt_at) as next_attempt_at
from front.shard_notifications()
group by merchant, status;

-- Every shard's ledger balances.
create or replace function front.shard_ledger_balances()
returns table (kind text, owner text, currency text, balance_minor bigint)
language plproxy
set search_path = pg_catalog, cp, pg_temp
as $$
    cluster 'carrierpay_shards';
    run on all;
    select kind::text as kind, owner, currency::text as currency, balance_minor from report.ledger_balances;
$$;

create or replace view report.ledger_balances as
select kind, owner, currency, sum(balance_minor)::bigint as balance_minor
from front.shard_ledger_balances()
group by kind, owner, currency;

-- Every shard's revenue.
create or replace function front.shard_revenue()
returns table (carrier text, country text, merchant text, currency text, payments bigint, collected_minor bigint,
               refunded_minor bigint, net_minor bigint)
language plproxy
set search_path = pg_catalog, cp, pg_temp
as $$
    cluster 'carrierpay_shards';
    run on all;
    select carrier, country::text as country, merchant, currency::text as currency, payments, collected_minor, refunded_minor, net_minor
    from report.revenue;
$$;

create or replace view report.revenue as
select carrier, country, merchant, currency, sum(payments)::bigint as payments,
       sum(collected_minor)::bigint as collected_minor, sum(refunded_minor)::bigint as refunded_minor,
       sum(net_minor)::bigint as net_minor
from front.shard_revenue()
group by carrier, country, merchant, currency;

-- Every shard's configuration digests (report.configuration of a shard).
create or replace function front.shard_configuration()
returns table (partition text, kind text, key text, digest text)
language plproxy
set search_path = pg_catalog, cp, pg_temp
as $$
    cluster 'carrierpay_shards';
    run on all;
    select partition, kind, key, digest from report.configuration;
$$;

-- Configuration the shards disagree on: an object some shard lacks, or holds with other content.
-- Empty when every admin change reached every shard (`carrierpay shards check`).
create or replace view report.configuration_drift as
with rows as (select * from front.shard_configuration()),
partitions as (select distinct partition from rows),
objects as (select distinct kind, key from rows)
select o.kind, o.key,
       array_agg(p.partition order by p.partition) filter (where r.digest is null) as missing_on,
       count(distinct r.digest) as versions
from objects o cross join partitions p
left join rows r on r.kind = o.kind and r.key = o.key and r.partition = p.partition
group by o.kind, o.key
having count(distinct r.digest) > 1 or bool_or(r.digest is null);
