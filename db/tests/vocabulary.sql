-- Vocabularies as data: the rule keys (cp.rule_key) and failure reasons (cp.failure_reason) are what
-- the rules and the payment paths read; an unknown rule key is refused wherever rules are saved.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(23);

-- The tables are filled, and their meanings hang together.
select cmp_ok((select count(*) from cp.rule_key), '>=', 24::bigint, 'the rule keys are loaded');
select set_eq($$ select reason from cp.failure_reason where permanent $$,
              array['subscriber_invalid', 'barred', 'consent_refused'], 'permanent: the subscription ends');
select set_eq($$ select reason from cp.failure_reason where not definite $$,
              array['throttled', 'unreachable', 'transient', 'unknown'], 'not definite: nothing is settled by them');
select set_eq($$ select reason from cp.failure_reason where nothing_sent $$, array['throttled', 'unreachable'],
              'nothing sent: the same call is queued again');
select throws_ok($$ insert into cp.failure_reason values ('odd', true, false, false, false, true, true, 'x') $$,
                 '23514', null, 'a permanent reason must be definite');

-- cp.effective_rules takes its defaults from cp.rule_key, and a key without a default sets nothing.
select is(cp.effective_rules((select carrier_id from cp.carrier where code = 'test_ng'))->'grace_days', '3',
          'a default from the table');
update cp.rule_key set default_value = '5' where key = 'grace_days';
select is(cp.effective_rules((select carrier_id from cp.carrier where code = 'test_ng'))->'grace_days', '5',
          'a changed default is the rule in force');
select ok(not cp.effective_rules((select carrier_id from cp.carrier where code = 'test_ng')) ? 'charging_hours',
          'a key without a default is absent until a preset or carrier sets it');
select ok((select bool_and(cp.effective_rules(carrier_id) ?& array(select key from cp.rule_key
                                                                    where default_value is not null))
           from cp.carrier), 'every carrier has every defaulted key');

-- Every shipped preset uses known keys with values of their types; the ZA preset no longer claims a
-- monthly confirmation nothing enforces.
select is((select count(*) from cp.regulation where cp.unknown_rule_key(rules) is not null), 0::bigint,
          'no shipped preset sets an unknown key');
select is((select count(*) from cp.regulation where cp.rules_problem(rules) is not null), 0::bigint,
          'every shipped preset''s values fit their types');
select ok(not (select rules from cp.regulation where code = 'ZA') ? 'monthly_confirmation_minor',
          'ZA: no unenforced monthly confirmation rule');

-- Unknown keys: CP090 from upsert_regulation and onboard_carrier, nothing saved.
select throws_ok($$ select admin.upsert_regulation('XX', 'x', 'x', '{"monthly_confirmation_minor": 20000}') $$,
                 'CP090', 'regulation XX: rule monthly_confirmation_minor is not a known rule key (cp.rule_key)',
                 'a preset with a rule nothing enforces is refused');
select throws_ok($$ select admin.upsert_regulation('XX', 'x', 'x', '{"optin_subscripton": true}') $$,
                 'CP090', null, 'a misspelt key is refused');
select is((select count(*) from cp.regulation where code = 'XX'), 0::bigint, 'nothing was saved');
select throws_ok($$ select admin.upsert_regulation('XX', 'x', 'x', '{"optin_subscription": "yes"}') $$,
                 'CP080', 'regulation XX: rule optin_subscription must be of type boolean, not "yes"',
                 'a value of the wrong type is refused');
select throws_ok($$ select admin.upsert_regulation('XX', 'x', 'x', '{"charging_hours": "8-20"}') $$,
                 'CP080', null, 'a charging window must be HH:MM-HH:MM');
select throws_ok($$ select admin.upsert_regulation('XX', 'x', 'x',
                                                   '{"sms_quiet_hours": [{"days": [8], "from": "20:00", "to": "08:00"}]}') $$,
                 'CP080', null, 'quiet hours on a day that is not an ISO weekday');
select lives_ok($$ select admin.upsert_regulation('XX', 'x', 'x', '{"optin_subscription": true, "cap_currency": "ZAR",
                                                   "monthly_cap_minor": 20000, "charging_hours": "08:00-20:00"}') $$,
                'known keys with values of their types are saved');
select throws_ok($$ select admin.onboard_carrier('{"code": "bad", "name": "Bad", "country": "NG", "mcc": "621",
                    "mnc": "99", "currency": "NGN", "timezone": "Africa/Lagos", "number_ranges": ["+234808"],
                    "regulation": "NG", "rules": {"daily_cap": 500}, "operations": {"send_sms": {}}}') $$,
                 'CP090', 'carrier spec: rule daily_cap is not a known rule key (cp.rule_key)',
                 'a carrier override with an unknown key is refused');
select is((select count(*) from cp.carrier where code = 'bad'), 0::bigint, 'no carrier was saved');
select throws_ok($$ select admin.onboard_carrier('{"code": "bad", "name": "Bad", "country": "NG", "mcc": "621",
                    "mnc": "99", "currency": "NGN", "timezone": "Africa/Lagos", "number_ranges": ["+234808"],
                    "regulation": "NG", "rules": {"grace_days": -1}, "operations": {"send_sms": {}}}') $$,
                 'CP090', null, 'a carrier override of the wrong type is refused');

-- The payment paths read the meanings from the table: a reason made permanent ends a subscription.
select api.subscribe('acme', '+2348020000050', 'club', 'daily', 'v1');
select api.confirm_optin('acme', (select max(optin_id) from cp.optin), pg_temp.pin('+2348020000050'));
update cp.failure_reason set permanent = true where reason = 'limit_exceeded';
select pg_temp.claim('test_ng');
select pg_temp.settle((select max(procedure_id) from cp.procedure p
                       join cp.subscription s using (subscription_id)
                       join cp.subscriber b on b.subscriber_id = s.subscriber_id
                       where b.msisdn = '+2348020000050'), 'failed', 'limit_exceeded');
select is((select status::text || '/' || cancel_reason from cp.subscription s join cp.subscriber b using (subscriber_id)
           where b.msisdn = '+2348020000050'), 'cancelled/limit_exceeded',
          'a subscription fails for good on a reason the table calls permanent');

select * from finish();
rollback;
