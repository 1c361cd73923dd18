-- api.subscribe with double opt-in (GB and NG), one live subscription per subscriber and product,
-- api.cancel_subscription and api.subscription.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(48);

-- NG: subscribing needs double SMS confirmation; nothing is charged before it.
create temp table doc as select api.subscribe('acme', '+2348020000001', 'club', 'daily', 's1') as d;
select is((select d->>'status' from doc), 'pending_optin', 'NG subscription waits for the opt-in');
select ok((select d ? 'optin_id' and d ? 'optin_expires_at' from doc), 'the document names the opt-in to confirm');
select is((select count(*)::int from cp.procedure where kind = 'charge'), 0, 'nothing charged before the opt-in');
select matches(pg_temp.pin('+2348020000001'), '^[0-9]{6}$', 'a PIN SMS went to the subscriber');
select is((select params->>'text' from cp.carrier_call where operation = 'send_sms') ~ 'subscription', true,
          'the SMS says it is for a subscription');
select is(api.subscribe('acme', '+2348020000001', 'club', 'daily', 's1'), (select d from doc),
          'a repeated subscribe returns the first document');
select throws_ok($$ select api.subscribe('acme', '+2348020000001', 'club', 'weekly', 's1') $$, 'CP010', null,
                 'same key, other plan');

select is(api.confirm_optin('acme', (select (d->>'optin_id')::bigint from doc), pg_temp.pin('+2348020000001')),
          jsonb_build_object('id', (select (d->>'optin_id')::bigint from doc), 'status', 'confirmed',
                             'subscription_id', (select (d->>'id')::bigint from doc)),
          'the right PIN confirms and names the subscription');
select is((select status::text from cp.subscription), 'active', 'the subscription is active');
select is((select amount_minor || ' ' || currency || ' ' || variant from cp.procedure where kind = 'charge'),
          '10000 NGN club_full', 'its first charge is queued at the top price point');

-- Its first charge succeeds: paid through one day later, in the subscriber's local time.
select pg_temp.claim('test_ng');
select pg_temp.settle((select procedure_id from cp.procedure where kind = 'charge'), 'succeeded');
select is((api.subscription('acme', (select (d->>'id')::bigint from doc)))->>'paid_through',
          '2030-03-05T12:00:00+00:00', 'paid through the next day');
select is(jsonb_array_length((api.subscription('acme', (select (d->>'id')::bigint from doc)))->'charges'), 1,
          'api.subscription lists its charge');
select is((api.subscription('acme', (select (d->>'id')::bigint from doc)))->'charges'->0->>'status', 'succeeded',
          'the charge succeeded');
select is((select array_agg(e->>'to' order by ord) from jsonb_array_elements(
              (api.subscription('acme', (select (d->>'id')::bigint from doc)))->'history') with ordinality t(e, ord)),
          array['pending_optin', 'active'], 'history shows created then active');
select is((select variant from cp.entitlement), 'club_full', 'the paid variant is delivered');
select throws_ok(format($$ select api.subscription('other', %s) $$, (select d->>'id' from doc)), 'CP050', null,
                 'another merchant cannot read it');

-- Cancel it; a second cancel is an error; nothing renews.
select is((api.cancel_subscription('acme', (select (d->>'id')::bigint from doc), 'user asked'))->>'status',
          'cancelled', 'cancelled');
select is((select cancel_reason || ' ' || (next_charge_at is null) from cp.subscription), 'user asked true',
          'with its reason and no next charge');
select throws_ok(format($$ select api.cancel_subscription('acme', %s) $$, (select d->>'id' from doc)), 'CP051', null,
                 'cancelling a cancelled subscription');
select throws_ok($$ select api.cancel_subscription('acme', 999999) $$, 'CP050', null, 'unknown subscription');
select is((select count(*)::int from cp.merchant_notification where kind = 'subscription.cancelled'), 1,
          'the merchant is notified of the cancellation');
select admin.advance_clock(interval '2 days');
select is(sched.run_due(), 0, 'a cancelled subscription does not renew');

-- GB: two-stage opt-in too; a wrong PIN is counted; an unconfirmed subscription can be cancelled.
create temp table gb as select api.subscribe('acme', '+447700900001', 'club', 'monthly', 's2') as d;
select is((select d->>'status' from gb), 'pending_optin', 'GB subscription waits for the opt-in');
select is((api.confirm_optin('acme', (select (d->>'optin_id')::bigint from gb), pg_temp.wrong_pin('+447700900001')))
          ->>'status', 'pin_wrong', 'wrong PIN');
select is((select status::text from cp.subscription where subscription_id = (select (d->>'id')::bigint from gb)),
          'pending_optin', 'still waiting after a wrong PIN');
select is((api.cancel_subscription('acme', (select (d->>'id')::bigint from gb)))->>'cancel_reason', 'merchant',
          'a pending subscription can be cancelled (default reason merchant)');
select throws_ok(format($$ select api.confirm_optin('acme', %s, %L) $$, (select d->>'optin_id' from gb),
                        pg_temp.pin('+447700900001')), 'CP051', null,
                 'confirming the opt-in of a cancelled subscription cannot activate it');

-- The right PIN activates a GB subscription and queues its first monthly charge.
create temp table gb3 as select api.subscribe('acme', '+447700900003', 'club', 'monthly', 's6') as d;
select is((api.confirm_optin('acme', (select (d->>'optin_id')::bigint from gb3), pg_temp.pin('+447700900003')))
          ->>'status', 'confirmed', 'GB: the right PIN confirms');
select is((select s.status::text || ' ' || p.amount_minor || ' ' || p.currency from cp.subscription s
           join cp.procedure p using (subscription_id) where s.subscription_id = (select (d->>'id')::bigint from gb3)),
          'active 499 GBP', 'GB: active, first monthly charge queued');

-- Three wrong PINs cancel the pending subscription.
create temp table gb2 as select api.subscribe('acme', '+447700900002', 'club', 'monthly', 's3') as d;
select api.confirm_optin('acme', (select (d->>'optin_id')::bigint from gb2), pg_temp.wrong_pin('+447700900002'))
from generate_series(1, 3);
select is((select status::text || ' ' || cancel_reason from cp.subscription
           where subscription_id = (select (d->>'id')::bigint from gb2)), 'cancelled optin_failed',
          'a failed opt-in cancels the pending subscription');

-- Bad plans.
select throws_ok($$ select api.subscribe('acme', '+2348020000009', 'club', 'yearly', 's4') $$, 'CP052', null,
                 'unknown plan');
select throws_ok($$ select api.subscribe('acme', '+2348020000009', 'club', 'monthly', 's5') $$, 'CP007', null,
                 'plan without a price point on this carrier');

-- One live subscription per subscriber and product: another key answers with the one there is.
create temp table one as select api.subscribe('acme', '+2348020000011', 'club', 'daily', 'one-1') as d;
create temp table two as select api.subscribe('acme', '+2348020000011', 'club', 'daily', 'one-2') as d;
select is((select d->>'id' from two), (select d->>'id' from one), 'a second subscribe finds the live subscription');
select is((select (one.d->>'existing') || ' ' || (two.d->>'existing') from one, two), 'false true',
          'the answer says whether it is new');
select is((select d->>'optin_id' from two), (select d->>'optin_id' from one),
          'while it waits for its PIN, the answer names the opt-in already sent');
select is((select count(*)::int from cp.optin o join cp.subscriber b using (subscriber_id)
           where b.msisdn = '+2348020000011'), 1, 'no second PIN is sent');
select is(api.confirm_optin('acme', (select (d->>'optin_id')::bigint from two), pg_temp.pin('+2348020000011'))->>'status',
          'confirmed', 'the opt-in confirms the one subscription');
create temp table three as select api.subscribe('acme', '+2348020000011', 'club', 'daily', 'one-3') as d;
select is((select d->>'id' || ' ' || (d->>'status') || ' ' || (d->>'existing') from three),
          (select d->>'id' from one) || ' active true', 'an active subscription is found too');
select is((api.subscribe('acme', '+2348020000011', 'club', 'weekly', 'one-4'))->>'plan', 'daily',
          'asking for another plan finds the live one too (cancel first to change plan)');
select is((select count(*)::int from cp.subscription s join cp.subscriber b using (subscriber_id)
           where b.msisdn = '+2348020000011'), 1, 'one subscription after four requests');
select is((select count(*)::int from cp.procedure where kind = 'charge'
           and subscription_id = (select (d->>'id')::bigint from one)), 1, 'one first charge');
select throws_ok(format($$ insert into cp.subscription (merchant_id, subscriber_id, carrier_id, product_id, plan,
                                                        status, price_point_id, status_since)
                          select merchant_id, subscriber_id, carrier_id, product_id, 'daily', 'pending_optin',
                                 price_point_id, now()
                          from cp.subscription where subscription_id = %s $$, (select d->>'id' from one)),
                 '23505', null, 'the unique index refuses a second live one, whoever writes it');

-- A subscription whose opt-in can no longer be given is replaced, not returned.
create temp table stale as select api.subscribe('acme', '+2348020000012', 'club', 'daily', 'stale-1') as d;
select admin.advance_clock(interval '11 minutes');
create temp table fresh as select api.subscribe('acme', '+2348020000012', 'club', 'daily', 'stale-2') as d;
select isnt((select d->>'id' from fresh), (select d->>'id' from stale), 'an expired PIN: a new subscription');
select is((select d->>'existing' from fresh), 'false', 'it is new');
select isnt((select d->>'optin_id' from fresh), (select d->>'optin_id' from stale), 'with a new opt-in');
select is((select status::text || ' ' || cancel_reason from cp.subscription
           where subscription_id = (select (d->>'id')::bigint from stale)), 'cancelled optin_expired',
          'the old one is cancelled');
select is((select status::text from cp.optin where optin_id = (select (d->>'optin_id')::bigint from stale)), 'expired',
          'and its opt-in expired');
select is((select count(*)::int from cp.subscription s join cp.subscriber b using (subscriber_id)
           where b.msisdn = '+2348020000012' and s.status <> 'cancelled'), 1, 'one live subscription');

select * from finish();
rollback;
