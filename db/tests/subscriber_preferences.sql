-- A subscriber's own time zone and language: set by the merchant (at subscribe time or later), used for
-- local time and texts; bad values and other merchants' customers refused, nothing half-written.
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(11);

select admin.set_sms_template('pin', '*', 'fr', '{merchant} : PIN for {product} is {pin}. Ne le partagez pas.');

select throws_ok($$ select api.subscribe('acme', '+447700900001', 'club', 'monthly', 'k0', 'Mars/Olympus') $$,
                 'CP141', null, 'an unknown time zone is refused');
select throws_ok($$ select api.subscribe('acme', '+447700900001', 'club', 'monthly', 'k0', null, 'French') $$,
                 'CP142', null, 'so is a language that is no ISO 639 code');
select is((select count(*)::int from cp.subscription), 0, 'and nothing was written');

create temp table sub as
select api.subscribe('acme', '+447700900001', 'club', 'monthly', 'k1', 'America/New_York', 'fr') as d;
select is(cp.subscriber_timezone((select subscriber_id from cp.subscriber where msisdn = '+447700900001')),
          'America/New_York', 'the subscriber''s zone is set at subscribe time');
select matches((select params->>'text' from cp.carrier_call where operation = 'send_sms'), 'Ne le partagez pas',
               'the PIN text is in the subscriber''s language');
select api.confirm_optin('acme', (select (d->>'optin_id')::bigint from sub), pg_temp.pin('+447700900001'));
select is((select anchor_local from cp.subscription), (cp.clock_now() at time zone 'America/New_York')::timestamp,
          'periods are counted in the subscriber''s local time');

select is(api.set_subscriber_preferences('acme', '+447700900001', null, 'de'),
          '{"msisdn": "+447700900001", "language": "de", "timezone": "America/New_York"}'::jsonb,
          'the merchant changes the language; a null zone keeps the zone');
select is(cp.sms_text('pin', (select subscriber_id from cp.subscriber where msisdn = '+447700900001'),
                      '{"pin": "1", "merchant": "m", "product": "p", "purpose": "x"}') ~ '^Your', true,
          'a language without a template falls back to English');
select throws_ok($$ select api.set_subscriber_preferences('other', '+447700900001', 'UTC') $$, 'CP143', null,
                 'another merchant may not set a subscriber it never dealt with');
select throws_ok($$ select api.set_subscriber_preferences('acme', '+447700900999', 'UTC') $$, 'CP143', null,
                 'nor may anyone for a number nobody knows');
select is((select timezone || ' ' || language from cp.subscriber where msisdn = '+447700900001'),
          'America/New_York de', 'refusals changed nothing');

select * from finish();
rollback;
