-- BUY <KEYWORD> by SMS: a one-time purchase charged like api.charge, its consent kept; refusals are replies.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(10);

-- A keyword is registered for a subscription plan; GEMS is then pointed at the one-time product.
select admin.add_sms_keyword('test_ng', '33001', 'GEMS', 'acme', 'club', 'daily');
select admin.add_sms_keyword('test_ng', '33001', 'CLUB', 'acme', 'club', 'daily');
select admin.add_sms_keyword('test_gb', '84433', 'GEMS', 'acme', 'club', 'monthly');
update cp.sms_keyword set product_id = (select product_id from cp.product where code = 'gems') where keyword = 'GEMS';

create temp table bought as
select adapter.record_mo('test_ng', '{"msisdn": "+2348020000001", "short_code": "33001", "text": "buy gems",
                                      "carrier_msg_id": "m1"}') as r;
select is((select r->>'status' from bought), 'purchase_queued', 'BUY GEMS queues a purchase');
select is((select amount_minor || ' ' || currency || ' ' || variant || ' ' || (metadata->>'channel')
             from cp.procedure where procedure_id = (select (r->>'payment_id')::bigint from bought)),
          '20000 NGN gems_100 sms', 'at the product''s one-time price, marked as bought by SMS');
select is((select count(*)::int from cp.carrier_call where operation = 'charge'), 1, 'one charge call queued');
select is((select method || ' ' || (evidence->>'purchase') from cp.consent), 'mo gems_100',
          'the MO is kept as the subscriber''s consent');
select is(adapter.record_mo('test_ng', '{"msisdn": "+2348020000001", "short_code": "33001", "text": "buy gems",
                                         "carrier_msg_id": "m1"}')->>'status', 'duplicate',
          'the same MO again buys nothing more');
select is((select count(*)::int from cp.procedure where kind = 'charge'), 1, 'still one purchase');

select is(adapter.record_mo('test_ng', '{"msisdn": "+2348020000001", "short_code": "33001", "text": "BUY CLUB",
                                         "carrier_msg_id": "m2"}')->'error'->>'code', 'CP007',
          'a product with no one-time price is refused');
select is(adapter.record_mo('test_ng', '{"msisdn": "+2348020000001", "short_code": "33001", "text": "BUY NOTHING",
                                         "carrier_msg_id": "m3"}')->>'status', 'unknown_keyword',
          'an unknown keyword is answered, not charged');
select is(adapter.record_mo('test_gb', '{"msisdn": "+447700900001", "short_code": "84433", "text": "BUY GEMS",
                                         "carrier_msg_id": "m4"}')->'error'->>'code', 'CP140',
          'where every one-time purchase needs a confirmed opt-in, an SMS alone buys nothing');
select is((select count(*)::int from cp.procedure where kind = 'charge'), 1, 'refusals charge nothing');

select * from finish();
rollback;
