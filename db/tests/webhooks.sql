-- Merchant webhook URLs: https with a host and no credentials, plain http only where an operator
-- allows it; checked wherever the URL is set (admin.add_merchant, or the owner writing the table).
\set QUIET on
begin;
\ir fixtures/world.sql
select plan(10);

select throws_ok($$ select admin.add_merchant('wh1', 'W', 'ftp://wh.example/h') $$, 'CP063', null,
                 'a scheme other than https (or http) is refused');
select throws_ok($$ select admin.add_merchant('wh1', 'W', 'https:///h') $$, 'CP063', null, 'a URL needs a host');
select throws_ok($$ select admin.add_merchant('wh1', 'W', 'https://me:secret@wh.example/h') $$, 'CP063', null,
                 'no user name or password in the URL');
select throws_ok($$ select admin.add_merchant('wh1', 'W', E'https://wh.example/h\r\nX: y') $$, 'CP063', null,
                 'no spaces or control characters');
select throws_ok($$ select admin.add_merchant('wh1', 'W', 'http://wh.example/h') $$, 'CP064', null,
                 'plain http is refused by default');
select is((select count(*)::int from cp.merchant where code = 'wh1'), 0, 'nothing was created');
select lives_ok($$ select admin.add_merchant('wh1', 'W', 'https://wh.example/h') $$, 'https is accepted');
select throws_ok($$ update cp.merchant set webhook_url = 'http://10.0.0.1/h' where code = 'wh1' $$, 'CP064', null,
                 'a direct update is checked the same way');
set local carrierpay.webhook_allow_http = on;
select lives_ok($$ update cp.merchant set webhook_url = 'http://wh.example/h' where code = 'wh1' $$,
                'plain http where the operator allows it');
select lives_ok($$ update cp.merchant set webhook_url = null where code = 'wh1' $$, 'no URL: no notifications');

select * from finish();
rollback;
