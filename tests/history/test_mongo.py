"""The MongoDB store.

No MongoDB server can be installed on the machine these tests were written on. The tests that
need one run when CARRIERPAY_TEST_MONGODB_URL is set (e.g. mongodb://127.0.0.1:27017) and are
skipped with that reason otherwise. Everything else here is a unit test of the document mapping
and of duplicate handling, the latter with a small fake collection object; the PostgreSQL side
of shipping is always real.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
from pymongo.errors import BulkWriteError

from carrierpay.history.documents import document_key
from carrierpay.history.shipper import Shipper
from carrierpay.history.stores import (
    MongoStore,
    StoreUnavailable,
    from_mongo,
    insert_ignoring_duplicates,
    open_store,
    to_mongo,
)
from carrierpay.history.timeline import timeline

MONGO_URL = os.environ.get("CARRIERPAY_TEST_MONGODB_URL")
needs_mongo = pytest.mark.skipif(
    not MONGO_URL, reason="no MongoDB server here: set CARRIERPAY_TEST_MONGODB_URL to run the MongoDB store tests"
)

AT = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
DOC = {
    "source": "carrier_log", "id": 17, "aggregate_type": "carrier_call", "aggregate_id": 5, "kind": "charge",
    "occurred_at": AT, "recorded_at": AT, "procedure_id": 3, "payment_id": 3, "subscription_id": None,
    "subscriber_id": 9, "body": {"outcome": "succeeded", "request": {"amount": 499}},
}


# -- unit: mapping ---------------------------------------------------------------------------

def test_document_id_becomes_mongo_id_and_back():
    stored = to_mongo(DOC)
    assert stored["_id"] == 17 and "id" not in stored and "source" not in stored
    assert stored["recorded_at"] is AT  # a BSON date, which the TTL index needs
    assert from_mongo("carrier_log", stored) == DOC


def test_naive_dates_from_a_client_without_tz_aware_are_read_as_utc():
    stored = to_mongo(DOC) | {"recorded_at": AT.replace(tzinfo=None), "occurred_at": AT.replace(tzinfo=None)}
    assert from_mongo("carrier_log", stored)["recorded_at"] == AT


def test_open_store_picks_the_store_by_scheme():
    assert isinstance(open_store("mongodb://127.0.0.1:1/history"), MongoStore)
    with pytest.raises(ValueError):
        open_store("redis://127.0.0.1/0")


# -- unit: duplicate handling (fake collection) ----------------------------------------------

class FakeCollection:
    """Accepts each _id once, like a collection's unique _id index, and answers as pymongo does."""

    def __init__(self, fail_with: dict | None = None):
        self.docs: dict = {}
        self.fail_with = fail_with

    def insert_many(self, documents, ordered=True):
        assert ordered is False  # one duplicate must not stop the rest of the batch
        errors = []
        for index, doc in enumerate(documents):
            if doc["_id"] in self.docs:
                errors.append({"index": index, "code": 11000, "errmsg": "E11000 duplicate key error"})
            else:
                self.docs[doc["_id"]] = doc
        if self.fail_with:
            errors.append(self.fail_with)
        if errors:
            raise BulkWriteError({"writeErrors": errors, "writeConcernErrors": [],
                                  "nInserted": len(documents) - len(errors)})

        class Result:
            inserted_ids = [d["_id"] for d in documents]

        return Result()


def test_duplicates_are_ignored_and_new_documents_kept():
    coll = FakeCollection()
    assert insert_ignoring_duplicates(coll, [{"_id": 1}, {"_id": 2}]) == 2
    assert insert_ignoring_duplicates(coll, [{"_id": 1}, {"_id": 3}, {"_id": 2}]) == 1
    assert sorted(coll.docs) == [1, 2, 3]
    assert insert_ignoring_duplicates(coll, []) == 0


def test_other_write_errors_raise():
    coll = FakeCollection(fail_with={"index": 0, "code": 121, "errmsg": "Document failed validation"})
    with pytest.raises(BulkWriteError):
        insert_ignoring_duplicates(coll, [{"_id": 1}])


def test_write_concern_errors_raise():
    class Unacknowledged(FakeCollection):
        def insert_many(self, documents, ordered=True):
            raise BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 64, "errmsg": "waiting"}],
                                  "nInserted": len(documents)})

    with pytest.raises(BulkWriteError):
        insert_ignoring_duplicates(Unacknowledged(), [{"_id": 1}])


def test_write_puts_each_source_in_its_collection():
    collections = {"events": FakeCollection(), "carrier_log": FakeCollection()}

    class FakeClient:
        def get_default_database(self, default):
            return collections

        def close(self):
            pass

    store = MongoStore("mongodb://unused/db", client=FakeClient())
    event = DOC | {"source": "event", "id": 17, "aggregate_type": "procedure", "aggregate_id": 3}
    assert store.write([DOC, event]) == 2
    assert store.write([DOC, event]) == 0
    assert list(collections["events"].docs) == [17] and list(collections["carrier_log"].docs) == [17]


def test_unreachable_server_is_store_unavailable():
    store = MongoStore("mongodb://127.0.0.1:1/history", timeout_ms=200)
    with pytest.raises(StoreUnavailable):
        store.write([DOC])
    store.close()


# -- integration: a real MongoDB server ------------------------------------------------------

@pytest.fixture
def mongo_store():
    parts = urlsplit(MONGO_URL)
    name = f"carrierpay_test_{uuid.uuid4().hex[:10]}"
    store = MongoStore(urlunsplit(parts._replace(path=f"/{name}")))
    yield store
    store._database().client.drop_database(name)
    store.close()


@needs_mongo
def test_shipping_to_mongodb_gives_the_same_timeline(db_url, world, mongo_store):
    paid = world.payment_with_calls(world.subscriber("+447700900123"), calls=2)
    other = world.payment_with_calls(world.subscriber(), calls=1)
    before = world.outbox_keys()
    Shipper(db_url, mongo_store, batch_size=3).drain()
    assert world.outbox_keys() == set()
    keys = [document_key(d) for d in timeline(mongo_store, "procedure", paid["procedure_id"])]
    assert [k for k in keys if k in set(paid["documents"])] == paid["documents"]
    assert not set(keys) & set(other["documents"])
    stored = {("event", d["_id"]) for d in mongo_store.collection("event").find()}
    stored |= {("carrier_log", d["_id"]) for d in mongo_store.collection("carrier_log").find()}
    assert stored == before and set(other["documents"]) <= stored


@needs_mongo
def test_mongodb_resend_is_idempotent_and_retention_uses_ttl(mongo_store):
    mongo_store.ensure_ready({"event": 30, "carrier_log": 5})
    old = DOC | {"id": 1, "recorded_at": datetime.now(UTC) - timedelta(days=10)}
    new = DOC | {"id": 2, "recorded_at": datetime.now(UTC)}
    assert mongo_store.write([old, new]) == 2
    assert mongo_store.write([old, new]) == 0
    indexes = mongo_store.collection("carrier_log").index_information()
    assert indexes["retention"]["expireAfterSeconds"] == 5 * 86400
    mongo_store.apply_retention({"event": 30, "carrier_log": 5})
    assert [d["_id"] for d in mongo_store.collection("carrier_log").find()] == [2]
    mongo_store.apply_retention({"event": 30, "carrier_log": 7})
    assert mongo_store.collection("carrier_log").index_information()["retention"]["expireAfterSeconds"] == 7 * 86400
