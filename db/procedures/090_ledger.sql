-- Double-entry ledger. Entries are inserted, never updated (triggers in db/triggers/journal.sql and
-- db/triggers/ledger_entry.sql), and no balance row exists: balances are sums, so no row is touched
-- by every charge.

-- The ledger account for a kind and owner, created on first use.
create or replace function cp.ledger_account_id(
    p_kind cp.account_kind, p_currency text,
    p_carrier_id integer default null, p_merchant_id integer default null, p_country text default null
) returns integer
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_id integer;
begin
    select account_id into v_id from cp.ledger_account
    where kind = p_kind and currency = p_currency and carrier_id is not distinct from p_carrier_id
      and merchant_id is not distinct from p_merchant_id and country is not distinct from p_country;
    if v_id is null then
        insert into cp.ledger_account (kind, carrier_id, merchant_id, country, currency)
        values (p_kind, p_carrier_id, p_merchant_id, p_country, p_currency)
        on conflict do nothing
        returning account_id into v_id;
        if v_id is null then  -- created concurrently
            select account_id into v_id from cp.ledger_account
            where kind = p_kind and currency = p_currency and carrier_id is not distinct from p_carrier_id
              and merchant_id is not distinct from p_merchant_id and country is not distinct from p_country;
        end if;
    end if;
    return v_id;
end
$$;

-- How a gross (tax-inclusive) amount splits: tax, carrier share, platform fee, merchant net.
-- Rounding remainders go to the merchant so the parts always add up to the gross amount.
create or replace function cp.split_amount(p_gross bigint, p_vat_bp integer, p_carrier_share_bp integer,
                                          p_platform_fee_bp integer)
returns table (tax bigint, carrier_share bigint, platform_fee bigint, merchant_net bigint)
language plpgsql immutable
-- One row: the planner's default guess for a set-returning function (1,000) sized the batch journal
-- query's hash tables and sorts for a thousand times the rows, and cost a second per batch.
rows 1
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_net bigint;
begin
    tax := round(p_gross::numeric * p_vat_bp / (10000 + p_vat_bp));
    v_net := p_gross - tax;
    carrier_share := round(v_net::numeric * p_carrier_share_bp / 10000);
    platform_fee := round((v_net - carrier_share)::numeric * p_platform_fee_bp / 10000);
    merchant_net := v_net - carrier_share - platform_fee;
    return next;
end
$$;

-- Post one balanced journal from (account, amount) pairs; amounts debit positive, credit negative.
-- One statement, so the journal and its entries exist together whenever its check runs.
create or replace function cp.post_journal(p_procedure_id bigint, p_kind text, p_currency text,
                                           p_accounts integer[], p_amounts bigint[])
returns bigint
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_journal_id bigint;
begin
    with journal as (
        insert into cp.journal (procedure_id, kind, currency, posted_at)
        values (p_procedure_id, p_kind, p_currency, cp.clock_now())
        returning journal_id
    ), entry as (
        insert into cp.ledger_entry (journal_id, account_id, amount_minor)
        select j.journal_id, t.a, t.m from journal j, unnest(p_accounts, p_amounts) as t(a, m) where t.m <> 0
    )
    select journal_id into v_journal_id from journal;
    return v_journal_id;
end
$$;

-- The charge journals of succeeded charges, one per procedure, for its collected amount: the carrier
-- owes the gross; tax, carrier share, platform fee and merchant net. One statement per table for the
-- whole batch; the accounts are looked up (or created) once per distinct owner in it. A charge that
-- collected nothing moved no money and gets no journal (a journal has at least two entries).
create or replace function cp.post_charge_journals(p_procs cp.procedure[]) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
begin
    with charge as (
        select p.procedure_id, p.currency, p.collected_minor, p.merchant_id, k.carrier_id, k.country,
               s.tax, s.carrier_share, s.platform_fee, s.merchant_net
        from unnest(p_procs) p
        join cp.carrier k on k.carrier_id = p.carrier_id
        cross join lateral cp.split_amount(p.collected_minor,
                                           (select vat_bp from cp.country c where c.country = k.country),
                                           k.carrier_share_bp,
                                           (select platform_fee_bp from cp.merchant m
                                            where m.merchant_id = p.merchant_id)) s
        where p.collected_minor <> 0
    ), line as (
        select c.procedure_id, w.kind, c.currency, w.carrier_id, w.merchant_id, w.country, w.ord, w.amount_minor
        from charge c
        cross join lateral (values
            (1, 'carrier_receivable'::cp.account_kind, c.carrier_id, null::integer, null::text, c.collected_minor),
            (2, 'tax_payable', null, null, c.country::text, -c.tax),
            (3, 'carrier_share', c.carrier_id, null, null, -c.carrier_share),
            (4, 'platform_revenue', null, null, null, -c.platform_fee),
            (5, 'merchant_payable', null, c.merchant_id, null, -c.merchant_net)
        ) as w(ord, kind, carrier_id, merchant_id, country, amount_minor)
        where w.amount_minor <> 0
    ), account as (
        select o.*, cp.ledger_account_id(o.kind, o.currency, o.carrier_id, o.merchant_id, o.country) as account_id
        from (select distinct kind, currency, carrier_id, merchant_id, country from line) o
    ), journal as (
        insert into cp.journal (procedure_id, kind, currency, posted_at)
        select procedure_id, 'charge', currency, cp.clock_now() from charge order by procedure_id
        returning journal_id, procedure_id
    )
    insert into cp.ledger_entry (journal_id, account_id, amount_minor)
    select j.journal_id, a.account_id, l.amount_minor
    from line l
    join journal j using (procedure_id)
    join account a on a.kind = l.kind and a.currency = l.currency
                  and a.carrier_id is not distinct from l.carrier_id
                  and a.merchant_id is not distinct from l.merchant_id
                  and a.country is not distinct from l.country
    order by j.journal_id, l.ord;
end
$$;

-- The refund journal: the reverse of the original charge's entries, in proportion to the refund.
-- The last refund takes whatever remains on each account, so a full refund nets every account to 0.
create or replace function cp.post_refund_journal(p_refund_id bigint, p_amount bigint) returns bigint
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_refund cp.procedure;
    v_charge cp.procedure;
    v_accounts integer[];
    v_amounts bigint[];
    v_remaining bigint;
    v_line record;
    v_part bigint;
    v_carry bigint := 0;
begin
    select * into v_refund from cp.procedure where procedure_id = p_refund_id;
    select * into v_charge from cp.procedure where procedure_id = v_refund.parent_id;
    -- What is still booked per account for this charge (original minus earlier refunds).
    v_remaining := v_charge.collected_minor - v_charge.refunded_minor;
    for v_line in
        select e.account_id, sum(e.amount_minor) as booked
        from cp.journal j join cp.ledger_entry e using (journal_id)
        where j.procedure_id = v_charge.procedure_id
           or j.procedure_id in (select procedure_id from cp.procedure where parent_id = v_charge.procedure_id
                                 and kind = 'refund' and procedure_id <> p_refund_id)
        group by e.account_id
        having sum(e.amount_minor) <> 0
        order by e.account_id
    loop
        if p_amount = v_remaining then
            v_part := -v_line.booked;
        else
            v_part := -round(v_line.booked::numeric * p_amount / v_remaining);
        end if;
        v_accounts := v_accounts || v_line.account_id;
        v_amounts := v_amounts || v_part;
        v_carry := v_carry + v_part;
    end loop;
    -- Rounding can leave the parts a unit off balance: settle it on the merchant's line.
    if v_carry <> 0 then
        for i in 1 .. coalesce(array_length(v_accounts, 1), 0) loop
            if v_accounts[i] = cp.ledger_account_id('merchant_payable', v_charge.currency,
                                                     p_merchant_id => v_charge.merchant_id) then
                v_amounts[i] := v_amounts[i] - v_carry;
                exit;
            end if;
        end loop;
    end if;
    return cp.post_journal(p_refund_id, 'refund', v_charge.currency, v_accounts, v_amounts);
end
$$;

-- Raise unless a journal is a real double entry: at least two entries, summing to zero in each
-- currency, all in the journal's own currency. One query per journal, run once per journal at the
-- commit that posts it (deferred constraint trigger on cp.journal).
create or replace function cp.assert_journal_balanced(p_journal_id bigint, p_currency text) returns void
language plpgsql
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_entries bigint;
    v_off text;
    v_foreign text;
begin
    select coalesce(sum(g.entries), 0),
           string_agg(format('%s by %s', g.currency, g.total), ', ' order by g.currency) filter (where g.total <> 0),
           string_agg(g.currency, ', ' order by g.currency) filter (where g.currency <> p_currency)
    into v_entries, v_off, v_foreign
    from (select a.currency::text as currency, count(*) as entries, sum(e.amount_minor) as total
          from cp.ledger_entry e join cp.ledger_account a using (account_id)
          where e.journal_id = p_journal_id
          group by a.currency) g;
    if v_entries < 2 then
        perform cp.fail('CP065', format('journal %s has %s entries; a journal needs at least two', p_journal_id,
                                        v_entries));
    end if;
    if v_off is not null then
        perform cp.fail('CP061', format('journal %s does not balance (off in %s)', p_journal_id, v_off));
    end if;
    if v_foreign is not null then
        perform cp.fail('CP067', format('journal %s in %s has entries on accounts in %s', p_journal_id, p_currency,
                                        v_foreign));
    end if;
end
$$;

-- Fold the journals posted since the last fold into the per-account balances and check each once for
-- balance, so the ledger reports (report.ledger_balances, report.unbalanced_journals) read the fold and
-- the journals past its watermark instead of every entry; returns how many journals were folded. Set-based
-- and run by the scheduler, never by a payment, so no balance row is updated by every charge.
-- A journal visible to the fold is final: its entries committed with it, later transactions cannot add
-- to it (_200_journal_open) and nothing may change them (_100_immutable), so it is summed and checked
-- once. Journal ids are handed out in order (the identity sequence caches one id at a time): an id
-- below the highest visible one that is not visible was taken by a transaction that was inserting
-- journals then, and so holds a lock on cp.journal until it ends. Such an id is remembered
-- (cp.ledger_straggler) with those transactions; it is folded when it appears, and forgotten once none
-- of them is left and it still has not (it was rolled back).
create or replace function sched.fold_ledger(p_limit integer default 50000) returns integer
language plpgsql security definer
set search_path = pg_catalog, cp, pg_temp
as $$
declare
    v_now timestamptz := cp.clock_now();
    v_from bigint;
    v_to bigint;
    v_gone bigint[] := '{}';
    v_folded integer;
begin
    select checked_through into v_from from cp.ledger_fold for update;  -- one folder at a time
    -- A partition of a sharded deployment draws its ids from its own block (carrierpay/migrate.py).
    v_from := greatest(v_from, (select q.seqmin - 1 from pg_catalog.pg_sequence q
                                where q.seqrelid = pg_catalog.pg_get_serial_sequence('cp.journal', 'journal_id')::regclass));
    -- Stragglers whose possible posters have all ended: what the next statement (a newer snapshot, under
    -- read committed) does not see, no one will ever see. Under a snapshot kept for the whole transaction
    -- none is forgotten.
    if pg_catalog.current_setting('transaction_isolation') = 'read committed'
       and exists (select from cp.ledger_straggler) then
        with running as materialized (select distinct l.virtualtransaction from pg_catalog.pg_locks l
                                      where l.virtualtransaction is not null)
        select coalesce(array_agg(s.journal_id), '{}') into v_gone
        from cp.ledger_straggler s
        where not exists (select from running r where r.virtualtransaction = any(s.lockers));
    end if;
    select max(j.journal_id) into v_to
    from (select x.journal_id from cp.journal x where x.journal_id > v_from order by x.journal_id limit p_limit) j;
    v_to := coalesce(v_to, v_from);
    with passed as (
        insert into cp.ledger_straggler (journal_id, since, lockers)
        select g.id, v_now,
               (select coalesce(array_agg(distinct l.virtualtransaction), '{}') from pg_catalog.pg_locks l
                where l.locktype = 'relation' and l.relation = 'cp.journal'::regclass
                  and l.virtualtransaction is not null)
        from pg_catalog.generate_series(v_from + 1, v_to) g(id)
        where not exists (select from cp.journal j where j.journal_id = g.id)
        on conflict do nothing
    ), late as (
        delete from cp.ledger_straggler s
        where s.journal_id <= v_from and exists (select from cp.journal j where j.journal_id = s.journal_id)
        returning s.journal_id
    ), gone as (
        delete from cp.ledger_straggler s
        where s.journal_id = any(v_gone) and s.journal_id <= v_from
          and not exists (select from cp.journal j where j.journal_id = s.journal_id)
    ), entry as materialized (
        select e.journal_id, e.account_id, e.amount_minor
        from cp.ledger_entry e where e.journal_id > v_from and e.journal_id <= v_to
        union all
        select e.journal_id, e.account_id, e.amount_minor
        from late l join cp.ledger_entry e on e.journal_id = l.journal_id
    ), balances as (
        insert into cp.ledger_fold_balance as b (account_id, balance_minor, entries)
        select x.account_id, sum(x.amount_minor), count(*) from entry x group by x.account_id
        on conflict (account_id) do update
        set balance_minor = b.balance_minor + excluded.balance_minor, entries = b.entries + excluded.entries
    ), unbalanced as (
        insert into cp.ledger_unbalanced (journal_id, off_by_minor, found_at)
        select x.journal_id, sum(x.amount_minor), v_now from entry x group by x.journal_id
        having sum(x.amount_minor) <> 0
        on conflict do nothing
    )
    select (select count(*) from cp.journal j where j.journal_id > v_from and j.journal_id <= v_to)
           + (select count(*) from late)
    into v_folded;
    update cp.ledger_fold
    set checked_through = v_to, folded_at = v_now, journals = journals + v_folded;
    return v_folded;
end
$$;
