-- Price selection (cp.price_points_for / cp.price_point_for): one order for one-time charges,
-- subscriptions, SMS keywords and renewals; inactive points never chosen; the same refusal everywhere.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(19);

create temp table docs (k text, d jsonb);

create function pg_temp.pp_for(p_merchant text, p_product text, p_carrier text, p_plan cp.plan,
                               p_amount bigint default null) returns text
language sql as $$
    select pp.variant || ' ' || pp.amount_minor
    from cp.price_point_for((select p.product_id from cp.product p join cp.merchant m using (merchant_id)
                             where m.code = p_merchant and p.code = p_product),
                            (select carrier_id from cp.carrier where code = p_carrier), p_plan, p_amount) pp
$$;
create function pg_temp.charged(p_key text) returns text
language sql as $$
    select variant || ' ' || amount_minor from cp.procedure
    where procedure_id = (select (d->>'id')::bigint from pg_temp.docs where k = p_key)
$$;

-- Country-wide points serve a carrier that has none of its own.
select is(pg_temp.pp_for('other', 'coins', 'test_ng', 'one_time'), 'coins 20000', 'country-wide when the carrier has none');

-- Carrier-specific beats country-wide, even a cheaper one, and the two are never mixed.
select admin.add_price_point('other', 'coins', 'one_time', 15000, 'NGN', 'coins_carrier', p_carrier => 'test_ng');
select admin.add_price_point('other', 'coins', 'one_time', 25000, 'NGN', 'coins_country_big', p_country => 'NG');
select is(pg_temp.pp_for('other', 'coins', 'test_ng', 'one_time'), 'coins_carrier 15000',
          'the carrier''s own point beats higher country-wide ones');
insert into docs select 'c1', api.charge('other', '+2348020000001', 'coins', 'c1');
select is(pg_temp.charged('c1'), 'coins_carrier 15000', 'api.charge takes the same point');
select throws_ok($$ select api.charge('other', '+2348020000001', 'coins', 'c2', 20000) $$, 'CP006', null,
                 'a country-wide amount is not on offer where the carrier has its own');

-- Highest first; an exact amount picks its step.
select is(pg_temp.pp_for('acme', 'gems', 'test_gb', 'one_time'), 'gems_200 500', 'the highest amount first');
insert into docs select 'g1', api.charge('acme', '+2348020000002', 'gems', 'g1', 20000);
select is(pg_temp.charged('g1'), 'gems_100 20000', 'exact amount requested');
select is(pg_temp.pp_for('acme', 'gems', 'test_gb', 'one_time', 300), 'gems_100 300', 'exact lower step');
select throws_ok($$ select pg_temp.pp_for('acme', 'gems', 'test_gb', 'one_time', 400) $$, 'CP006', null,
                 'an amount that is not a step');

-- Inactive points are never chosen, by default or by amount; with the carrier's own all inactive,
-- the country's apply again.
update cp.price_point set active = false where variant = 'gems_200';
select is(pg_temp.pp_for('acme', 'gems', 'test_gb', 'one_time'), 'gems_100 300', 'inactive top step skipped');
select throws_ok($$ select pg_temp.pp_for('acme', 'gems', 'test_gb', 'one_time', 500) $$, 'CP006', null,
                 'an inactive amount cannot be asked for');
update cp.price_point set active = false where variant = 'coins_carrier';
select is(pg_temp.pp_for('other', 'coins', 'test_ng', 'one_time'), 'coins_country_big 25000',
          'the carrier''s own all inactive: country-wide, highest first');

-- Subscriptions and renewals read the same ladder: carrier-specific, highest first, stepping down.
select admin.add_price_point('acme', 'club', 'daily', 30000, 'NGN', 'club_country', p_country => 'NG');
insert into docs select 's1', api.subscribe('acme', '+2348020000003', 'club', 'daily', 's1');
select is((select pp.variant from cp.subscription s join cp.price_point pp using (price_point_id)
           where s.subscription_id = (select (d->>'id')::bigint from docs where k = 's1')),
          'club_full', 'api.subscribe: the carrier''s top point, not the higher country-wide one');
select is((select string_agg((cp.renewal_price_point(s, l)).variant, ',' order by l)
           from cp.subscription s, generate_series(0, 3) l
           where s.subscription_id = (select (d->>'id')::bigint from docs where k = 's1')),
          'club_full,club_half,club_half,club_half', 'renewal steps down the same ladder and stops at its foot');

-- No active price point: CP007 on every path.
select throws_ok($$ select api.charge('acme', '+2348020000004', 'club', 'n1') $$, 'CP007', null,
                 'api.charge: no one-time price');
select throws_ok($$ select api.subscribe('acme', '+2348020000004', 'club', 'weekly', 'n2') $$, 'CP007', null,
                 'api.subscribe: no price for the plan');
update cp.price_point set active = false where variant = 'gems_100' and carrier_id is not null
   and carrier_id = (select carrier_id from cp.carrier where code = 'test_gb');
select throws_ok($$ select api.charge('acme', '+447700900005', 'gems', 'n3') $$, 'CP007', null,
                 'api.charge: every point inactive');
update cp.price_point set active = false
where product_id = (select product_id from cp.product where code = 'club') and plan = 'daily';
select throws_ok(format('select cp.start_renewal(%s)', (select (d->>'id')::bigint from docs where k = 's1')),
                 'CP007', null, 'a renewal whose plan has no active price left');
select is((select count(*)::int from cp.procedure
           where subscription_id = (select (d->>'id')::bigint from docs where k = 's1')), 0,
          'and nothing was queued for it');

-- An unknown subscription is CP050, as through the API.
select throws_ok($$ select cp.start_renewal(-1) $$, 'CP050', null, 'unknown subscription');

select * from finish();
rollback;
