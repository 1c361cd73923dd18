-- The vocabularies other files read: the regulation rule keys (cp.rule_key) and the failure reasons
-- (cp.failure_reason). The JSON passed to the two jsonb_to_recordset calls below is their one
-- source: migrate loads it into the tables, and the Python side (carrierpay/vocabulary.py: the carrier
-- spec schemas and validator, the reconciler) reads the same text, so a key or reason is added, or its
-- meaning changed, by one edit here. docs/sql-api.md lists both tables (tests/core/test_vocabulary.py
-- compares them). A row taken out of the JSON is deleted from its table.

-- Rule keys. type: boolean | integer | minor (an amount in minor units of cap_currency) | currency
-- (ISO 4217) | window ('HH:MM-HH:MM' local time) | quiet_hours (a list of {days, from, to}).
-- default: what cp.effective_rules takes when neither the preset nor the carrier sets the key; null
-- (or absent): no such rule unless one is set.
with v as (
    select * from jsonb_to_recordset($rule_keys$[
{"key": "optin_subscription", "type": "boolean", "default": false,
 "doc": "a subscription needs the subscriber's opt-in (PIN or SMS YES) before its first charge"},
{"key": "optin_one_time", "type": "boolean", "default": false,
 "doc": "a one-time purchase needs the subscriber's opt-in (PIN) before it is charged"},
{"key": "pin_length", "type": "integer", "default": 6,
 "doc": "digits in a PIN, 4 to 10"},
{"key": "pin_ttl_minutes", "type": "integer", "default": 10,
 "doc": "minutes a PIN stays valid (and an SMS YES request, unless sms_confirm_minutes is set), 1 to 1440"},
{"key": "pin_max_attempts", "type": "integer", "default": 3,
 "doc": "PIN checks one opt-in takes before it is closed, 1 to 10"},
{"key": "pin_requests_per_msisdn_hour", "type": "integer", "default": 5,
 "doc": "PINs one number may be sent in an hour, by all merchants together"},
{"key": "pin_requests_per_msisdn_day", "type": "integer", "default": 10,
 "doc": "PINs one number may be sent in a day, by all merchants together"},
{"key": "pin_failures_per_msisdn_day", "type": "integer", "default": 10,
 "doc": "wrong PINs on one number's opt-ins in a day before the number is locked"},
{"key": "pin_failures_per_msisdn_30d", "type": "integer", "default": 30,
 "doc": "wrong PINs on one number's opt-ins in 30 days before the number is locked"},
{"key": "pin_requests_per_merchant_hour", "type": "integer", "default": 5000,
 "doc": "PINs one merchant may send to one carrier's numbers in an hour"},
{"key": "pin_failures_per_merchant_day", "type": "integer", "default": 1000,
 "doc": "wrong PINs one merchant's opt-ins on one carrier may take in a day before it may check no more"},
{"key": "sms_confirm_minutes", "type": "integer", "default": null,
 "doc": "minutes an SMS YES request stays open; unset: pin_ttl_minutes"},
{"key": "refund_window_days", "type": "integer", "default": 30,
 "doc": "days after a payment succeeded within which it may be refunded (CP042 after)"},
{"key": "max_attempts_per_day", "type": "integer", "default": 3,
 "doc": "renewal attempts per subscription and local day"},
{"key": "grace_days", "type": "integer", "default": 3,
 "doc": "days an unpaid period may age before its subscription is suspended"},
{"key": "cancel_after_days", "type": "integer", "default": 30,
 "doc": "days an unpaid period may age before its subscription is cancelled (unpaid)"},
{"key": "renewal_notice_hours", "type": "integer", "default": null,
 "doc": "a reminder SMS is queued once a renewal is this many hours away, once per period; unset: none"},
{"key": "receipt_after_charge", "type": "boolean", "default": false,
 "doc": "a receipt SMS follows every successful charge"},
{"key": "sms_quiet_hours", "type": "quiet_hours", "default": [],
 "doc": "local times no notice SMS is sent ({days: ISO weekdays, from, to}); notices wait, PINs and replies do not"},
{"key": "charging_hours", "type": "window", "default": null,
 "doc": "local hours in which money may be taken (HH:MM-HH:MM); outside them a charge is refused (CP023) or waits; unset: any time"},
{"key": "cap_currency", "type": "currency", "default": null,
 "doc": "the currency of the amount caps (max_transaction_minor, daily_cap_minor, monthly_cap_minor); they apply only to carriers billing in it"},
{"key": "max_transaction_minor", "type": "minor", "default": null,
 "doc": "the largest single charge (CP020 above it); unset: no cap"},
{"key": "daily_cap_minor", "type": "minor", "default": null,
 "doc": "what a subscriber may spend in a local day, checked at purchase and subscription (CP021); unset: no cap"},
{"key": "monthly_cap_minor", "type": "minor", "default": null,
 "doc": "what a subscriber may spend in a local month, checked at purchase and subscription (CP022); unset: no cap"}
]$rule_keys$) as x (key text, type text, "default" jsonb, doc text)
), saved as (
    insert into cp.rule_key (key, type, default_value, doc)
    select key, type, nullif("default", 'null'), doc from v
    on conflict (key) do update
    set type = excluded.type, default_value = excluded.default_value, doc = excluded.doc
)
delete from cp.rule_key where key not in (select key from v);

-- Failure reasons: what a failed call's reason means (the columns are described on the table).
with v as (
    select * from jsonb_to_recordset($failure_reasons$[
{"reason": "insufficient_funds", "permanent": false, "definite": true, "nothing_sent": false,
 "steps_down": true, "in_result_map": true, "in_smpp_map": true,
 "doc": "the subscriber's balance does not cover the amount"},
{"reason": "subscriber_invalid", "permanent": true, "definite": true, "nothing_sent": false,
 "steps_down": false, "in_result_map": true, "in_smpp_map": true,
 "doc": "the number is not, or no longer, this carrier's subscriber"},
{"reason": "barred", "permanent": true, "definite": true, "nothing_sent": false,
 "steps_down": false, "in_result_map": true, "in_smpp_map": true,
 "doc": "the subscriber is barred from premium charges"},
{"reason": "consent_refused", "permanent": true, "definite": true, "nothing_sent": false,
 "steps_down": false, "in_result_map": true, "in_smpp_map": false,
 "doc": "the carrier holds no consent (or a refusal) for this service"},
{"reason": "limit_exceeded", "permanent": false, "definite": true, "nothing_sent": false,
 "steps_down": false, "in_result_map": true, "in_smpp_map": false,
 "doc": "a spending limit the carrier keeps for the subscriber was reached"},
{"reason": "rejected", "permanent": false, "definite": true, "nothing_sent": false,
 "steps_down": false, "in_result_map": true, "in_smpp_map": true,
 "doc": "the carrier refused the call for another reason; also the reason of a failure that names none"},
{"reason": "expired", "permanent": false, "definite": true, "nothing_sent": false,
 "steps_down": false, "in_result_map": false, "in_smpp_map": true,
 "doc": "an SMS expired undelivered at the SMSC (delivery receipt EXPIRED), or a two-step charge still queued when its confirmation window closed (its reservation is released)"},
{"reason": "cancelled", "permanent": false, "definite": true, "nothing_sent": false,
 "steps_down": false, "in_result_map": false, "in_smpp_map": false,
 "doc": "the merchant cancelled a two-step charge before its confirmation reached the carrier (its reservation is released)"},
{"reason": "undeliverable", "permanent": false, "definite": true, "nothing_sent": false,
 "steps_down": false, "in_result_map": false, "in_smpp_map": true,
 "doc": "an SMS could not be delivered (delivery receipt UNDELIV)"},
{"reason": "deleted", "permanent": false, "definite": true, "nothing_sent": false,
 "steps_down": false, "in_result_map": false, "in_smpp_map": true,
 "doc": "an SMS was deleted at the SMSC before delivery (delivery receipt DELETED)"},
{"reason": "settled_by_operator", "permanent": false, "definite": true, "nothing_sent": false,
 "steps_down": false, "in_result_map": false, "in_smpp_map": false,
 "doc": "an operator settled the unsettled call as failed (admin.settle_call)"},
{"reason": "throttled", "permanent": false, "definite": false, "nothing_sent": true,
 "steps_down": false, "in_result_map": true, "in_smpp_map": true,
 "doc": "the carrier turned the call away for our rate; it goes back to the queue after retry_after_s"},
{"reason": "unreachable", "permanent": false, "definite": false, "nothing_sent": true,
 "steps_down": false, "in_result_map": true, "in_smpp_map": false,
 "doc": "the carrier could not be reached; the call is held on a back-off for up to an hour"},
{"reason": "transient", "permanent": false, "definite": false, "nothing_sent": false,
 "steps_down": false, "in_result_map": true, "in_smpp_map": true,
 "doc": "a temporary carrier fault; a new attempt (new call) follows, at most three in all"},
{"reason": "unknown", "permanent": false, "definite": false, "nothing_sent": false,
 "steps_down": false, "in_result_map": true, "in_smpp_map": true,
 "doc": "the answer does not say what happened"}
]$failure_reasons$) as x (reason text, permanent boolean, definite boolean, nothing_sent boolean,
                          steps_down boolean, in_result_map boolean, in_smpp_map boolean, doc text)
), saved as (
    insert into cp.failure_reason (reason, permanent, definite, nothing_sent, steps_down, in_result_map,
                                   in_smpp_map, doc)
    select reason, permanent, definite, nothing_sent, steps_down, in_result_map, in_smpp_map, doc from v
    on conflict (reason) do update
    set permanent = excluded.permanent, definite = excluded.definite, nothing_sent = excluded.nothing_sent,
        steps_down = excluded.steps_down, in_result_map = excluded.in_result_map,
        in_smpp_map = excluded.in_smpp_map, doc = excluded.doc
)
delete from cp.failure_reason where reason not in (select reason from v);
