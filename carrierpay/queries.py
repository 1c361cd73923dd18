"""Every SQL statement the Python side runs, by name. The logic they call lives in db/procedures."""

from __future__ import annotations

# Adapter daemons and the reconciler (role carrierpay_adapter).
CLAIM_CALLS = "select adapter.claim_calls(%(carrier)s, %(limit)s, %(lease)s, %(worker)s)"
COMPLETE_CALLS = "select adapter.complete_calls(%(results)s)"
RECORD_CALLBACK = "select adapter.record_callback(%(carrier)s, %(payload)s)"
EXPIRE_LEASES = "select adapter.expire_leases(%(limit)s)"
CLAIM_RECONCILIATIONS = "select adapter.claim_reconciliations(%(carrier)s, %(limit)s)"
ENABLED_CARRIERS = "select code, spec from cp.carrier where enabled order by code"
LISTEN_CALLS = "listen carrierpay_calls"
CARRIER_SPEC = "select spec from cp.carrier where code = %(carrier)s"
# Unsettled calls of a carrier named by correlator (a report settles many at once).
UNSETTLED_BY_CORRELATOR = """
    select c.call_id, c.correlator, c.operation
    from cp.carrier_call c join cp.carrier k using (carrier_id)
    where k.code = %(carrier)s and c.correlator = any(%(correlators)s)
      and c.status in ('unknown', 'awaiting_result')
"""
# The carrier-local dates on which calls were sent (which daily reports to download).
CALL_LOCAL_DATES = """
    select distinct (c.created_at at time zone k.timezone)::date
    from cp.carrier_call c join cp.carrier k using (carrier_id)
    where c.call_id = any(%(call_ids)s)
"""

# Scheduler (role carrierpay_admin).
RUN_DUE = "select sched.run_due(%(limit)s)"
FOLD_HOUR_STATS = "select sched.fold_hour_stats()"

# Operators (role carrierpay_admin).
ONBOARD_CARRIER = "select admin.onboard_carrier(%(spec)s)"
SET_CARRIER_ENABLED = "select admin.set_carrier_enabled(%(carrier)s, %(enabled)s)"
LIST_CARRIERS = """
    select k.code, k.name, k.country, k.currency, k.tps, k.regulation_code, k.enabled,
           (select count(*) from cp.call_queue q where q.carrier_id = k.carrier_id) as queued,
           (select count(*) from cp.carrier_call c
             where c.carrier_id = k.carrier_id and c.status in ('unknown', 'awaiting_result')) as unsettled
    from cp.carrier k order by k.code
"""
SHOW_CARRIER = """
    select k.code, k.name, k.country, k.mcc, k.mnc, k.currency, k.timezone, k.tps, k.carrier_share_bp,
           k.regulation_code, k.enabled, k.rules_override, k.spec,
           (select jsonb_object_agg(status, n) from (select c.status, count(*) n from cp.carrier_call c
             where c.carrier_id = k.carrier_id group by c.status) s) as calls
    from cp.carrier k where k.code = %(carrier)s
"""
ADVANCE_CLOCK = "select admin.advance_clock(%(by)s)"
SET_CLOCK = "select admin.set_clock(%(at)s)"
CLOCK_NOW = "select cp.clock_now()"
