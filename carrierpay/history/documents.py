"""The history document: one shape for both outboxes and both stores.

A document is a plain dict:

    source           "event" | "carrier_log"          (which outbox; the key is source + id)
    id               the outbox id (event_id or log_id)
    aggregate_type   "procedure", "subscription", "subscriber", "carrier_call", …
                     (a carrier_log row belongs to its carrier call)
    aggregate_id
    kind             the event kind, or the carrier operation of a log row ("charge", "refund" …)
    occurred_at      business time of an event (cp.clock_now()); a log row's logged_at
    recorded_at      real time the outbox row was written: ordering, partitioning and retention
    procedure_id, payment_id, subscription_id, subscriber_id
                     correlation, so a timeline finds a payment's calls and logs (null when n/a)
    body             the event payload, or the log row (call, outcome, request, response …)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

SOURCES = ("event", "carrier_log")
CORRELATIONS = ("procedure_id", "payment_id", "subscription_id", "subscriber_id")
LOG_BODY_FIELDS = ("call_id", "carrier_id", "operation", "outcome", "reason", "carrier_code", "latency_ms",
                   "request", "response")


def document_key(doc: Mapping) -> tuple[str, int]:
    return doc["source"], doc["id"]


def event_document(row: Mapping, redact: Callable) -> dict:
    """From a row of adapter.claim_history_events()."""
    return {
        "source": "event",
        "id": row["event_id"],
        "aggregate_type": row["aggregate_type"],
        "aggregate_id": row["aggregate_id"],
        "kind": row["kind"],
        "occurred_at": row["occurred_at"],
        "recorded_at": row["recorded_at"],
        **{name: row[name] for name in CORRELATIONS},
        "body": redact(row["payload"] or {}),
    }


def log_document(row: Mapping, redact: Callable) -> dict:
    """From a row of adapter.claim_carrier_logs()."""
    return {
        "source": "carrier_log",
        "id": row["log_id"],
        "aggregate_type": "carrier_call",
        "aggregate_id": row["call_id"],
        "kind": row["operation"],
        "occurred_at": row["logged_at"],
        "recorded_at": row["logged_at"],
        **{name: row[name] for name in CORRELATIONS},
        "body": redact({name: row[name] for name in LOG_BODY_FIELDS}),
    }


def sort_key(doc: Mapping) -> tuple[datetime, int, int]:
    # Real time orders a timeline; within one instant an event precedes the log it caused,
    # and ids keep one aggregate's rows in the order they were written.
    return doc["recorded_at"], SOURCES.index(doc["source"]), doc["id"]
