-- The SQL behind the merchant HTTP API: exact decimal amounts, CAMARA statuses, tokens that expire and
-- are revoked, and a held two-step charge that reaches the carrier only when confirmed.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(16);

-- Decimal amounts in major units become minor units exactly, or are refused.
select is(cp.minor_units('200.00', 'NGN'), 20000::bigint, 'a decimal amount in minor units');
select is(cp.minor_units('0.29', 'GBP'), 29::bigint, 'no binary float on the way');
select is(cp.minor_units('500', 'UGX'), 500::bigint, 'a currency without decimals');
select throws_ok($$select cp.minor_units('200.001', 'NGN')$$, 'CP113', null, 'more decimals than the currency has');
select throws_ok($$select cp.minor_units('1e400', 'NGN')$$, 'CP113', null, 'a huge amount');
select throws_ok($$select cp.minor_units('"5"', 'NGN')$$, 'CP113', null, 'a string');
select is(cp.major_units(20000, 'NGN'), 200.00::numeric, 'and back');

-- A client's token acts for its merchant, with its scopes, until it expires or the client is revoked.
create temp table client as select admin.add_api_client('acme', array['carrier-billing:payments:read']) as c;
create temp table token as
select gateway.issue_token((select c->>'client_id' from client), (select c->>'client_secret' from client)) as t;
select is((select merchant from gateway.authenticate((select t->>'access_token' from token),
                                                     'carrier-billing:payments:read')), 'acme', 'the token acts for acme');
select throws_ok($$select * from gateway.authenticate((select t->>'access_token' from token),
                                                      'carrier-billing:payments:create')$$,
                 'CP112', null, 'not beyond its scopes');
select throws_ok($$select gateway.issue_token((select c->>'client_id' from client), 'wrong')$$, 'CP110', null,
                 'a wrong secret gets no token');
update cp.api_token set expires_at = clock_timestamp() - interval '1 second';
select throws_ok($$select * from gateway.authenticate((select t->>'access_token' from token), null)$$,
                 'CP111', null, 'an expired token is refused');
select admin.revoke_api_client((select c->>'client_id' from client));
select throws_ok($$select gateway.issue_token((select c->>'client_id' from client),
                                              (select c->>'client_secret' from client))$$,
                 'CP110', null, 'a revoked client gets no token');

-- Two steps: prepared without a carrier call, confirmed into one.
create temp table prepared as
select api.prepare_payment('acme', '{"amountTransaction": {"phoneNumber": "+2348020000031", "referenceCode": "p-1",
    "paymentAmount": {"chargingInformation": {"amount": 200, "currency": "NGN", "description": "gems"}}}}',
    'gems') as d;
select is((select d->>'paymentStatus' from prepared), 'reserved', 'prepared: reserved');
select is((select count(*)::int from cp.carrier_call where procedure_id = (select (d->>'paymentId')::bigint from prepared)),
          0, 'nothing asked of the carrier yet');
select api.confirm_payment('acme', (select d->>'paymentId' from prepared), '{"phoneNumber": "+2348020000031"}');
select is((select count(*)::int from cp.carrier_call where procedure_id = (select (d->>'paymentId')::bigint from prepared)
           and operation = 'charge'), 1, 'confirmed: the charge is queued');
select throws_ok($$select api.cancel_payment('acme', (select d->>'paymentId' from prepared),
                                             '{"phoneNumber": "+2348020000031"}')$$,
                 'CP124', null, 'a confirmed payment cannot be cancelled');

select * from finish();
rollback;
