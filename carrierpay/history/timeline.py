"""Reading the history: one aggregate's documents, in the order they happened."""

from __future__ import annotations

from carrierpay.history.documents import document_key, sort_key
from carrierpay.history.stores import HistoryStore

# What a timeline of each aggregate type gathers, by correlation field.
_LOOKUPS = {
    # a payment: its own events, its carrier calls and their logs, and refunds of it
    "procedure": ("procedure_id", "payment_id"),
    "payment": ("procedure_id", "payment_id"),
    # a subscription: its events and everything of its charges
    "subscription": ("subscription_id",),
    "subscriber": ("subscriber_id",),
}


def timeline(store: HistoryStore, aggregate_type: str, aggregate_id: int) -> list[dict]:
    """Documents about the aggregate (and what belongs to it), oldest first, each once."""
    found: dict[tuple[str, int], dict] = {}
    for field in _LOOKUPS.get(aggregate_type, ()):
        for doc in store.find(field, aggregate_id):
            found.setdefault(document_key(doc), doc)
    if aggregate_type not in _LOOKUPS:
        for doc in store.find("aggregate", aggregate_id, aggregate_type=aggregate_type):
            found.setdefault(document_key(doc), doc)
    return sorted(found.values(), key=sort_key)
