-- Double-entry ledger. Entries are inserted, never updated (triggers in db/triggers/ledger.sql),
-- and no balance row exists: balances are sums, so no row is touched by every charge.

-- The ledger account for a kind and owner, created on first use.
create or replace function cp.ledger_account_id(
    p_kind cp.account_kind, p_currency text,
    p_carrier_id integer default null, p_merchant_id integer default null, p_country text default null
) returns integer
language plpgsql
set search_path = pg_catalog, cp
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
set search_path = pg_catalog, cp
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
create or replace function cp.post_journal(p_procedure_id bigint, p_kind text, p_currency text,
                                           p_accounts integer[], p_amounts bigint[])
returns bigint
language plpgsql
set search_path = pg_catalog, cp
as $$
declare
    v_journal_id bigint;
begin
    insert into cp.journal (procedure_id, kind, currency, posted_at)
    values (p_procedure_id, p_kind, p_currency, cp.clock_now())
    returning journal_id into v_journal_id;
    insert into cp.ledger_entry (journal_id, account_id, amount_minor)
    select v_journal_id, a, m from unnest(p_accounts, p_amounts) as t(a, m) where m <> 0;
    return v_journal_id;
end
$$;

-- The charge journal: carrier owes the gross; tax, carrier share, platform fee and merchant net.
create or replace function cp.post_charge_journal(p_procedure_id bigint, p_amount bigint) returns bigint
language plpgsql
set search_path = pg_catalog, cp
as $$
declare
    v_proc cp.procedure;
    v_carrier cp.carrier;
    v_split record;
    v_accounts integer[];
begin
    select * into v_proc from cp.procedure where procedure_id = p_procedure_id;
    select * into v_carrier from cp.carrier where carrier_id = v_proc.carrier_id;
    select s.* into v_split
    from cp.split_amount(p_amount, (select vat_bp from cp.country where country = v_carrier.country),
                         v_carrier.carrier_share_bp,
                         (select platform_fee_bp from cp.merchant where merchant_id = v_proc.merchant_id)) s;
    -- The five accounts in one query; one not created yet goes through cp.ledger_account_id.
    select array_agg(coalesce(a.account_id, cp.ledger_account_id(w.kind, v_proc.currency, w.carrier_id,
                                                                 w.merchant_id, w.country))
                     order by w.ord)
    into v_accounts
    from (values (1, 'carrier_receivable'::cp.account_kind, v_carrier.carrier_id, null::integer, null::text),
                 (2, 'tax_payable'::cp.account_kind, null, null, v_carrier.country::text),
                 (3, 'carrier_share'::cp.account_kind, v_carrier.carrier_id, null, null),
                 (4, 'platform_revenue'::cp.account_kind, null, null, null),
                 (5, 'merchant_payable'::cp.account_kind, null, v_proc.merchant_id, null))
         as w(ord, kind, carrier_id, merchant_id, country)
    left join cp.ledger_account a
           on a.kind = w.kind and a.currency = v_proc.currency and a.carrier_id is not distinct from w.carrier_id
          and a.merchant_id is not distinct from w.merchant_id and a.country is not distinct from w.country;
    return cp.post_journal(
        p_procedure_id, 'charge', v_proc.currency, v_accounts,
        array[p_amount, -v_split.tax, -v_split.carrier_share, -v_split.platform_fee, -v_split.merchant_net]);
end
$$;

-- The refund journal: the reverse of the original charge's entries, in proportion to the refund.
-- The last refund takes whatever remains on each account, so a full refund nets every account to 0.
create or replace function cp.post_refund_journal(p_refund_id bigint, p_amount bigint) returns bigint
language plpgsql
set search_path = pg_catalog, cp
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

-- Raise unless every entry of the journal sums to zero (run at commit by a constraint trigger).
create or replace function cp.assert_journal_balanced(p_journal_id bigint) returns void
language plpgsql
set search_path = pg_catalog, cp
as $$
declare
    v_sum bigint;
begin
    select coalesce(sum(amount_minor), 0) into v_sum from cp.ledger_entry where journal_id = p_journal_id;
    if v_sum <> 0 then
        perform cp.fail('CP061', format('journal %s does not balance (off by %s)', p_journal_id, v_sum));
    end if;
end
$$;
