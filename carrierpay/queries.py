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

# Scheduler (role carrierpay_admin).
RUN_DUE = "select sched.run_due(%(limit)s)"
FOLD_HOUR_STATS = "select sched.fold_hour_stats()"

# Operators (role carrierpay_admin).
ONBOARD_CARRIER = "select admin.onboard_carrier(%(spec)s)"
SET_CARRIER_ENABLED = "select admin.set_carrier_enabled(%(carrier)s, %(enabled)s)"
ADVANCE_CLOCK = "select admin.advance_clock(%(by)s)"
SET_CLOCK = "select admin.set_clock(%(at)s)"
CLOCK_NOW = "select cp.clock_now()"
