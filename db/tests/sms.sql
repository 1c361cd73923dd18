-- SMS journeys: keyword subscribe with a YES reply, the YES window, STOP / STOP ALL, HELP,
-- duplicate and oddly written MO, templates, and premium MT charges settled by delivery receipt.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(77);

select admin.onboard_carrier('{"code": "test_za", "name": "Test ZA", "country": "ZA", "mcc": "655", "mnc": "01",
  "currency": "ZAR", "timezone": "Africa/Johannesburg", "number_ranges": ["+2782"], "throughput": {"tps": 1000},
  "regulation": "ZA", "transport": "smpp",
  "operations": {"send_sms": {"pattern": "callback", "safe_to_repeat": true},
                 "charge": {"pattern": "callback", "safe_to_repeat": false}},
  "smpp": {"source_short_codes": ["33001", "33005"]}}'::jsonb);
select admin.add_price_point('acme', 'club', 'daily', 500, 'ZAR', 'club_day', p_carrier => 'test_za');
select admin.add_product('acme', 'vip', 'VIP lounge');
select admin.add_price_point('acme', 'vip', 'weekly', 1000, 'ZAR', 'vip_week', p_carrier => 'test_za');
select admin.add_price_point('acme', 'gems', 'one_time', 500, 'ZAR', 'gems_za', p_carrier => 'test_za');

-- An MO to short code 33001 of test_za.
create function pg_temp.mo(p_msisdn text, p_text text, p_id text, p_short_code text default '33001') returns jsonb
language sql as $$
    select adapter.record_mo('test_za', jsonb_build_object('msisdn', p_msisdn, 'short_code', p_short_code,
                                                           'text', p_text, 'carrier_msg_id', p_id))
$$;
-- The last SMS queued for a number.
create function pg_temp.last_sms(p_msisdn text) returns jsonb
language sql as $$
    select c.params || jsonb_build_object('available_at', q.available_at) from cp.carrier_call c
    left join cp.call_queue q using (call_id)
    where c.operation = 'send_sms' and c.params->>'msisdn' = p_msisdn order by c.call_id desc limit 1
$$;
create function pg_temp.sub_status(p_msisdn text, p_product text) returns text
language sql as $$
    select s.status::text from cp.subscription s join cp.subscriber b using (subscriber_id) join cp.product p using (product_id)
    where b.msisdn = p_msisdn and p.code = p_product order by s.subscription_id desc limit 1
$$;

-- Keywords.
select is((admin.add_sms_keyword('test_za', '33001', ' gems ', 'acme', 'club', 'daily'))->>'keyword', 'GEMS',
          'a keyword is stored upper case');
select lives_ok($$ select admin.add_sms_keyword('test_za', '33001', 'VIP', 'acme', 'vip', 'weekly') $$,
                'a second keyword on the same short code');
select throws_ok($$ select admin.add_sms_keyword('test_za', '33001', 'stop', 'acme', 'club', 'daily') $$, 'CP080', null,
                 'a command word cannot be a keyword');
select throws_ok($$ select admin.add_sms_keyword('test_za', '44444', 'MORE', 'acme', 'club', 'daily') $$, 'CP080', null,
                 'the short code must be one of the carrier''s');
select throws_ok($$ select admin.add_sms_keyword('test_za', '33001', 'COINS', 'other', 'coins', 'daily') $$, 'CP007',
                 null, 'the product needs a price for the plan on the carrier');

-- SUB GEMS: pending subscription and a WASPA-style confirmation request, sent at once.
select is((pg_temp.mo('+27820000001', 'SUB GEMS', 'm1'))->>'status', 'confirmation_sent', 'SUB GEMS asks for YES');
select is(pg_temp.sub_status('+27820000001', 'club'), 'pending_optin', 'the subscription waits for the YES');
select matches(pg_temp.last_sms('+27820000001')->>'text',
               '^Reply YES within 10 min to join Gem club from Acme Games at R5\.00/day, billed daily until you send STOP GEMS to 33001',
               'the request names service, provider, cost and frequency');
select is(pg_temp.last_sms('+27820000001')->>'short_code', '33001', 'the reply comes from the short code written to');
select is(pg_temp.last_sms('+27820000001')->>'purpose', 'reply', 'it is a reply');
select ok((pg_temp.last_sms('+27820000001')->>'available_at')::timestamptz <= cp.clock_now(),
          'a reply is not held back');

-- The same MO again (the SMSC redelivered it): no second effect.
select is((pg_temp.mo('+27820000001', 'SUB GEMS', 'm1'))->>'status', 'duplicate', 'a redelivered MO is a duplicate');
select is((select count(*)::int from cp.subscription), 1, 'still one subscription');
select is((select count(*)::int from cp.carrier_call where operation = 'send_sms'), 1, 'still one reply');
select is((select count(*)::int from cp.mo_inbox), 1, 'the MO is recorded once');

-- YES within the window: consent by MO, active, first charge queued as a premium MT.
select is((pg_temp.mo('+27820000001', '  yes ', 'm2'))->>'status', 'confirmed', 'YES confirms');
select is(pg_temp.sub_status('+27820000001', 'club'), 'active', 'the subscription is active');
select is((select method from cp.consent order by consent_id desc limit 1), 'mo', 'the consent is logged as by MO');
select is((select count(*)::int from cp.carrier_call c join cp.procedure p using (procedure_id)
           where c.operation = 'charge' and p.subscription_id is not null and c.status = 'queued'), 1,
          'the first charge is queued');
select is((select (params->>'amount_minor')::int from cp.carrier_call where operation = 'charge'), 500,
          'at the plan price');
select matches((select params->>'text' from cp.carrier_call where operation = 'charge'),
               'Gem club from Acme Games for R5\.00', 'the premium MT carries its text');
select matches(pg_temp.last_sms('+27820000001')->>'text', '^You are subscribed to Gem club', 'a welcome follows');
select is((pg_temp.mo('+27820000001', 'SUB GEMS', 'm2b'))->>'status', 'already_subscribed',
          'SUB again while subscribed only answers');

-- YES too late.
select is((pg_temp.mo('+27820000002', 'sub gems', 'm3'))->>'status', 'confirmation_sent', 'second subscriber asks');
select admin.advance_clock(interval '11 minutes');
select is((pg_temp.mo('+27820000002', 'YES', 'm4'))->>'status', 'expired', 'YES after the window is refused');
select is(pg_temp.sub_status('+27820000002', 'club'), 'cancelled', 'the waiting subscription is cancelled');
select is((select cancel_reason from cp.subscription s join cp.subscriber b using (subscriber_id)
           where b.msisdn = '+27820000002'), 'optin_expired', 'because the opt-in expired');
select matches(pg_temp.last_sms('+27820000002')->>'text', 'has expired', 'and the subscriber is told');
select is((pg_temp.mo('+27820000002', 'YES', 'm4b'))->>'status', 'nothing_to_confirm', 'a stray YES confirms nothing');

-- One live subscription per subscriber and product, by SMS and by the API alike.
create temp table za_api as select api.subscribe('acme', '+27820000020', 'club', 'daily', 'za-1') as d;
select is((pg_temp.mo('+27820000020', 'SUB GEMS', 'm30'))->>'subscription_id', (select d->>'id' from za_api),
          'SUB while the merchant''s PIN is pending opens a YES on the same subscription');
select is((select count(*)::int from cp.subscription s join cp.subscriber b using (subscriber_id)
           where b.msisdn = '+27820000020'), 1, 'no second subscription');
select is((pg_temp.mo('+27820000020', 'YES', 'm31'))->>'status', 'confirmed', 'YES confirms it');
select is(api.confirm_optin('acme', (select (d->>'optin_id')::bigint from za_api), pg_temp.pin('+27820000020'))
          ->>'status', 'confirmed', 'the PIN afterwards is accepted');
select is((select count(*)::int from cp.procedure where kind = 'charge'
           and subscription_id = (select (d->>'id')::bigint from za_api)), 1, 'but the two confirmations queue one charge');
create temp table za_pin as select api.subscribe('acme', '+27820000021', 'club', 'daily', 'za-3') as d;
select pg_temp.mo('+27820000021', 'SUB GEMS', 'm32');
select api.confirm_optin('acme', (select (d->>'optin_id')::bigint from za_pin), pg_temp.pin('+27820000021'));
select is((pg_temp.mo('+27820000021', 'YES', 'm33'))->>'status', 'already_subscribed',
          'a YES after the PIN activated the subscription is told it is subscribed');
select matches(pg_temp.last_sms('+27820000021')->>'text', 'already', 'in so many words');
select is((select count(*)::int from cp.procedure where kind = 'charge'
           and subscription_id = (select (d->>'id')::bigint from za_pin)), 1, 'still one first charge');
select is((api.subscribe('acme', '+27820000001', 'club', 'daily', 'za-2'))->>'id',
          (select s.subscription_id::text from cp.subscription s join cp.subscriber b using (subscriber_id)
           where b.msisdn = '+27820000001' and s.status <> 'cancelled'),
          'api.subscribe finds the subscription made by SMS');

-- HELP and what is not understood.
select is((pg_temp.mo('+27820000003', 'help', 'm5'))->>'status', 'help', 'HELP answers');
select matches(pg_temp.last_sms('+27820000003')->>'text', 'SUB GEMS: Gem club from Acme Games, R5\.00/day',
               'HELP lists the services with their price');
select matches(pg_temp.last_sms('+27820000003')->>'text', 'STOP', 'and says how to stop');
select is((pg_temp.mo('+27820000003', 'Привет 😀', 'm6'))->>'status', 'not_understood', 'other scripts are tolerated');
select matches(pg_temp.last_sms('+27820000003')->>'text', '^Sorry, we did not understand.*SUB GEMS',
               'and answered with help');
select is((pg_temp.mo('+27820000003', '', 'm7'))->>'status', 'not_understood', 'an empty MO is tolerated');
select is((pg_temp.mo('+27820000003', 'SUB NOPE', 'm8'))->>'status', 'unknown_keyword', 'an unknown keyword is answered');

-- Odd case and spacing, full-width letters, punctuation, a keyword alone.
select is(cp.normalize_mo_text(E'\uFF53\uFF55\uFF42\u3000 Gems!'), 'SUB GEMS', 'full-width letters and spaces fold');
select is((pg_temp.mo('+27820000003', E'\uFF53\uFF55\uFF42\u3000 Gems!', 'm9'))->>'status', 'confirmation_sent',
          'SUB written oddly still subscribes');
select is((pg_temp.mo('+27820000004', E' vip\u00A0', 'm10'))->>'status', 'confirmation_sent',
          'a keyword alone means SUB');
select is((pg_temp.mo('+27820000004', 'Yes.', 'm11'))->>'status', 'confirmed', 'Yes. confirms');

-- Templates in the subscriber's language.
select cp.lock_subscriber('+27820000005', (select carrier_id from cp.carrier where code = 'test_za'));
update cp.subscriber set language = 'af' where msisdn = '+27820000005';
select is((pg_temp.mo('+27820000005', 'SUB GEMS', 'm12'))->>'status', 'confirmation_sent', 'an Afrikaans speaker asks');
select matches(pg_temp.last_sms('+27820000005')->>'text', '^Antwoord YES.*R5\.00/dag, daagliks',
               'the request is in Afrikaans');
select is(cp.subscriber_language((select subscriber_id from cp.subscriber where msisdn = '+27820000001')), 'en',
          'the language defaults to the country''s');

-- STOP, STOP <KEYWORD>, STOP ALL.
select is((pg_temp.mo('+27820000001', 'SUB VIP', 'm13'))->>'status', 'confirmation_sent', 'first subscriber asks for VIP');
select is((pg_temp.mo('+27820000001', 'YES', 'm14'))->>'status', 'confirmed', 'and confirms');
select is((pg_temp.mo('+27820000001', 'STOP', 'm15'))->>'status', 'stopped', 'bare STOP stops');
select is(pg_temp.sub_status('+27820000001', 'vip'), 'cancelled', 'the most recent subscription');
select is(pg_temp.sub_status('+27820000001', 'club'), 'active', 'and only that one');
select matches(pg_temp.last_sms('+27820000001')->>'text', 'unsubscribed from VIP lounge', 'with a confirmation SMS');
select is((pg_temp.mo('+27820000003', 'stop gems', 'm16'))->>'status', 'stopped', 'STOP GEMS stops a waiting request');
select is((select status from cp.sms_confirmation c join cp.subscriber b using (subscriber_id)
           where b.msisdn = '+27820000003'), 'cancelled', 'its confirmation is withdrawn');
select is((pg_temp.mo('+27820000001', 'SUB VIP', 'm17'))->>'status', 'confirmation_sent', 'VIP asked again');
select is(jsonb_array_length((pg_temp.mo('+27820000001', 'Stop all', 'm18'))->'subscription_ids'), 2,
          'STOP ALL stops every subscription, waiting ones too');
select is((select count(*)::int from cp.subscription s join cp.subscriber b using (subscriber_id)
           where b.msisdn = '+27820000001' and s.status <> 'cancelled'), 0, 'nothing left');
select is((pg_temp.mo('+27820000001', 'STOP', 'm19'))->>'status', 'nothing_to_stop', 'STOP with nothing left is answered');

-- Premium MT charges settled by delivery receipt.
delete from cp.call_queue;  -- leave only the calls made below for the adapter
select is(((api.charge('acme', '+27820000009', 'gems', 'p1'))->>'status'), 'pending', 'a one-time premium MT purchase');
select pg_temp.claim('test_za');
select adapter.complete_calls(jsonb_build_array(jsonb_build_object(
    'call_id', (select max(call_id) from cp.carrier_call where operation = 'charge'), 'outcome', 'pending',
    'carrier_ref', 'M1')));
select is((adapter.record_callback('test_za', '{"carrier_ref": "M1", "outcome": "succeeded", "dedupe_key": "dlr:M1"}'))
          ->>'status', 'applied', 'the receipt matches the submit');
select is((select status::text from cp.procedure where kind = 'charge' and subscription_id is null), 'succeeded',
          'DELIVRD settles the purchase');

select api.charge('acme', '+27820000009', 'gems', 'p2');
select pg_temp.claim('test_za');
select adapter.complete_calls(jsonb_build_array(jsonb_build_object(
    'call_id', (select max(call_id) from cp.carrier_call where operation = 'charge'), 'outcome', 'pending',
    'carrier_ref', 'M2')));
select adapter.record_callback('test_za', '{"carrier_ref": "M2", "outcome": "failed", "reason": "insufficient_funds",
                                           "dedupe_key": "dlr:M2"}');
select is((select p.status::text || '/' || p.reason from cp.procedure p join cp.carrier_call c using (procedure_id)
           where c.carrier_ref = 'M2'), 'failed/insufficient_funds', 'no credit fails the purchase');

-- The receipt overtakes the submit_sm_resp: kept, then matched when the id is learnt.
select api.charge('acme', '+27820000009', 'gems', 'p3');
select pg_temp.claim('test_za');
select is((adapter.record_callback('test_za', '{"carrier_ref": "M3", "outcome": "succeeded", "dedupe_key": "dlr:M3"}'))
          ->>'status', 'unmatched', 'a receipt for an id not yet known is kept');
select adapter.complete_calls(jsonb_build_array(jsonb_build_object(
    'call_id', (select max(call_id) from cp.carrier_call where operation = 'charge'), 'outcome', 'pending',
    'carrier_ref', 'M3')));
select is((select p.status::text || '/' || c.status from cp.procedure p join cp.carrier_call c using (procedure_id)
           where c.carrier_ref = 'M3'), 'succeeded/done', 'and settles the call once its id arrives');
select is((select sum(amount_minor) from cp.ledger_entry)::int, 0, 'the ledger balances');

-- No receipt: the wait expires into unknown, and a late receipt still settles.
select api.charge('acme', '+27820000009', 'gems', 'p4');
select pg_temp.claim('test_za');
select adapter.complete_calls(jsonb_build_array(jsonb_build_object(
    'call_id', (select max(call_id) from cp.carrier_call where operation = 'charge'), 'outcome', 'pending',
    'carrier_ref', 'M4')));
select admin.advance_clock(interval '2 hours');
select is((adapter.expire_awaiting('test_za', interval '1 hour'))->>'unknown', '1', 'the unanswered charge expires');
select adapter.record_callback('test_za', '{"carrier_ref": "M4", "outcome": "succeeded", "dedupe_key": "dlr:M4"}');
select is((select p.status::text from cp.procedure p join cp.carrier_call c using (procedure_id)
           where c.carrier_ref = 'M4'), 'succeeded', 'a late receipt reconciles it');

-- Amounts in texts carry the currency's own decimals.
select is(cp.format_money(500, 'ZAR'), 'R5.00', 'two decimals for the rand');
select is(cp.format_money(1500, 'UGX'), '1500 UGX', 'none for the Ugandan shilling');
select is(cp.format_money(1250, 'KWD'), '1.250 KWD', 'three for the Kuwaiti dinar');
select is(cp.format_major(5, 'NGN'), '0.05', 'a fraction of a naira keeps its leading zero');

select * from finish();
rollback;
