-- Functions and triggers that no longer exist, dropped here and nowhere else, before every other file
-- is applied: a database migrated by an older release loses them, and a reader sees in one place what
-- was retired. Only names that nothing defines any more belong here (a function whose new definition
-- keeps its name but changes its arguments is dropped by its old signature).
--
-- Triggers are retired by dropping their function with CASCADE, never by DROP TRIGGER: DROP TRIGGER
-- locks its table against readers and writers even when the trigger is already gone, and this file
-- runs on every migrate; DROP FUNCTION IF EXISTS touches no table once the function is gone.

-- Functions replaced by a new signature.
drop function if exists api.check_balance(text, text, bigint);
drop function if exists api.subscribe(text, text, text, text, text);
drop function if exists cp.assert_journal_balanced(bigint);
drop function if exists cp.check_charge_rules(bigint, integer, bigint, text);
drop function if exists cp.post_charge_journal(bigint, bigint);
drop function if exists cp.mo_buy(cp.carrier, cp.subscriber, text, text, bigint, text);
drop function if exists cp.mo_subscribe(cp.carrier, cp.subscriber, text, text, bigint, text);
drop function if exists cp.queue_sms(bigint, text, text, integer, boolean);
drop function if exists cp.record_hour_stat(cp.procedure, boolean);
drop function if exists cp.retry_policy(cp.subscription);
drop function if exists cp.subscription_charge_failed(cp.procedure, text);
drop function if exists cp.subscription_charge_succeeded(cp.procedure);
drop function if exists cp.subscriber_slot(bigint, integer, timestamp[], boolean, integer);

-- Trigger functions, with their triggers: per-row events (now statement-level _900_event_created and
-- _900_event_changed), the per-row balance check on cp.ledger_entry (now the deferred _200_balanced on
-- cp.journal), and the old name of the receipt rematch (now cp.tg_carrier_call__rematch).
drop function if exists cp.tg_procedure__event() cascade;
drop function if exists cp.tg_subscription__event() cascade;
drop function if exists cp.tg_carrier_call__event() cascade;
drop function if exists cp.tg_ledger_entry__balanced() cascade;
drop function if exists cp.tg_carrier_call__rematch_callbacks() cascade;
-- A claim takes budget for what it picked, so none is given back (cp.take_budget's slots).
drop function if exists cp.return_budget(integer, integer);
-- Cancel may act on a confirmed two-step charge whose confirmation has not reached its carrier.
drop function if exists cp.check_prepared_step(cp.procedure, jsonb);
-- The single and batch forms of a charge's outcome, now one set-based implementation
-- (cp.collect_charges, cp.fail_charges) that a single call goes through as a batch of one.
drop function if exists cp.charge_succeeded(cp.procedure, cp.carrier_call, bigint);
drop function if exists cp.charge_failed(cp.procedure, cp.carrier_call, text);
drop function if exists cp.charges_succeeded(cp.procedure[]);
drop function if exists cp.charges_failed(cp.procedure[]);
-- The CAMARA lists take the merchantIdentifier filter.
drop function if exists api.list_payments(text, timestamptz, timestamptz, text[], text, integer, integer);
drop function if exists api.list_refunds(text, text, timestamptz, timestamptz, text[], text, integer, integer);
