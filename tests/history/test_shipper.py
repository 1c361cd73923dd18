"""The shipper against real PostgreSQL: payment database → history database on the same cluster."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from carrierpay.embedded import find_bindir
from carrierpay.history.documents import document_key
from carrierpay.history.shipper import Shipper, lag
from carrierpay.history.stores import PostgresStore, StoreUnavailable
from carrierpay.history.timeline import timeline


def all_documents(store: PostgresStore) -> list[tuple[str, int]]:
    with psycopg.connect(store.url) as conn:
        return [tuple(r) for r in conn.execute("select source, id from history.document order by source, id")]


class WrappedStore:
    """A real store with a hook around each write (to fail, record or crash at a chosen moment)."""

    def __init__(self, inner: PostgresStore, before=None, after=None):
        self.inner, self.before, self.after = inner, before, after
        self.url = inner.url
        self.writes = 0

    def ensure_ready(self):
        self.inner.ensure_ready()

    def write(self, documents):
        self.writes += 1
        if self.before:
            self.before(self.writes, documents)
        count = self.inner.write(documents)
        if self.after:
            self.after(self.writes, documents)
        return count

    def find(self, *args, **kwargs):
        return self.inner.find(*args, **kwargs)

    def apply_retention(self, *args, **kwargs):
        return self.inner.apply_retention(*args, **kwargs)

    def close(self):
        self.inner.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_payment_timeline_is_complete_and_in_order(db_url, world, store):
    alice = world.subscriber("+447700900123")
    sub = world.subscription(alice)
    sub_created = ("event", world.event("subscription", sub, "created", {"status": "pending_optin"}))
    paid = world.payment_with_calls(alice, calls=2, subscription_id=sub)
    sub_active = ("event", world.event("subscription", sub, "status_changed", {"to": "active"}))
    refund = world.procedure(alice, kind="refund", parent_id=paid["procedure_id"])
    refund_call = world.call(refund, "refund")
    refund_docs = [("event", world.event("procedure", refund, "created", {"status": "pending"})),
                   ("carrier_log", world.carrier_log(refund_call, refund, operation="refund"))]
    other = world.payment_with_calls(world.subscriber(), calls=1)
    before = world.outbox_keys()

    result = Shipper(db_url, store, batch_size=4).drain()

    assert result.documents == len(before)
    assert world.outbox_keys() == set()
    assert set(all_documents(store)) == before

    docs = timeline(store, "procedure", paid["procedure_id"])
    keys = [document_key(d) for d in docs]
    mine = paid["documents"] + refund_docs
    assert [k for k in keys if k in set(mine)] == mine  # everything, in the order it happened
    assert not set(keys) & set(other["documents"])
    logs = [d for d in docs if d["source"] == "carrier_log" and d["aggregate_id"] != refund_call]
    assert [d["body"]["outcome"] for d in logs] == ["transient", "succeeded"]
    assert all(d["payment_id"] == paid["procedure_id"] and d["subscription_id"] == sub for d in logs)
    assert all(d["recorded_at"].tzinfo is not None for d in docs)

    sub_keys = [document_key(d) for d in timeline(store, "subscription", sub)]
    expected = [sub_created, *paid["documents"], sub_active, *refund_docs]
    assert [k for k in sub_keys if k in set(expected)] == expected
    assert not set(sub_keys) & set(other["documents"])
    subscriber_keys = {document_key(d) for d in timeline(store, "subscriber", alice)}
    assert set(mine) <= subscriber_keys and not subscriber_keys & set(other["documents"])

    call_timeline = timeline(store, "carrier_call", refund_call)
    # The call's own 'created' event (written by its trigger) comes first, then its carrier log.
    assert [d["source"] for d in call_timeline] == ["event", "carrier_log"]
    assert document_key(call_timeline[-1]) == refund_docs[1]


def test_store_failing_mid_run_loses_nothing(db_url, world, store, conn):
    payments = [world.payment_with_calls(world.subscriber(), calls=2) for _ in range(4)]
    before = world.outbox_keys()

    def fail_on_third(n, _docs):
        if n == 3:
            raise StoreUnavailable("history store went away")

    flaky = WrappedStore(store, before=fail_on_third)
    shipper = Shipper(db_url, flaky, batch_size=5, name="flaky")
    with pytest.raises(StoreUnavailable):
        shipper.drain()

    shipped = set(all_documents(store))
    assert shipped and shipped | world.outbox_keys() == before  # each row is in one place or the other
    assert not shipped & world.outbox_keys()
    lag_rows = {r["outbox"]: r for r in lag(db_url)}
    assert lag_rows["event"]["unshipped"] + lag_rows["carrier_log"]["unshipped"] == len(before) - len(shipped)
    assert "went away" in lag_rows["event"]["last_error"]

    flaky.before = None  # the store is back
    shipper.drain()
    assert set(all_documents(store)) == before
    assert world.outbox_keys() == set()
    assert [r["last_error"] for r in lag(db_url)] == [None, None]  # shipped since: no longer news
    for paid in payments:
        keys = [document_key(d) for d in timeline(store, "procedure", paid["procedure_id"])]
        assert [k for k in keys if k in set(paid["documents"])] == paid["documents"]


def test_unreachable_store_keeps_the_outbox_and_shipping_resumes(db_url, world, history_url):
    world.payment_with_calls(world.subscriber(), calls=1)
    before = world.outbox_keys()
    down = PostgresStore(f"postgresql://postgres@127.0.0.1:{closed_port()}/carrierpay_history", connect_timeout=2)
    with pytest.raises(StoreUnavailable):
        Shipper(db_url, down, name="down").drain()
    assert world.outbox_keys() == before
    assert {r["outbox"]: r["unshipped"] for r in lag(db_url)} == {"event": len(before) - 1, "carrier_log": 1}

    store = PostgresStore(history_url)  # the history database does not exist yet: the store creates it
    Shipper(db_url, store, name="up").drain()
    assert set(all_documents(store)) == before and world.outbox_keys() == set()
    store.close()


def test_write_confirmed_but_delete_not_committed_is_resent_once(db_url, world, store):
    world.payment_with_calls(world.subscriber(), calls=3)
    before = world.outbox_keys()

    def crash_after_first(n, _docs):
        if n == 1:
            raise RuntimeError("shipper killed after the store confirmed")

    store_wrapper = WrappedStore(store, after=crash_after_first)
    with pytest.raises(RuntimeError):
        Shipper(db_url, store_wrapper, batch_size=100).drain()
    assert world.outbox_keys() == before  # the delete rolled back: everything is re-sent
    assert set(all_documents(store)) == before

    Shipper(db_url, store_wrapper, batch_size=100).drain()
    assert world.outbox_keys() == set()
    assert sorted(all_documents(store)) == sorted(before)  # no duplicates


def test_parallel_shippers_send_each_row_once_and_keep_aggregate_order(db_url, world, history_url):
    subscribers = [world.subscriber() for _ in range(6)]
    for round_ in range(3):
        for subscriber in subscribers:
            world.payment_with_calls(subscriber, calls=1 + round_ % 2)
    before = world.outbox_keys()
    written: list[tuple[str, int, str, int]] = []
    guard = threading.Lock()

    def record(_n, docs):
        with guard:
            written.extend((d["source"], d["id"], d["aggregate_type"], d["aggregate_id"]) for d in docs)

    stores = [WrappedStore(PostgresStore(history_url), after=record) for _ in range(3)]
    stores[0].ensure_ready()
    shippers = [Shipper(db_url, s, batch_size=3, name=f"p{i}") for i, s in enumerate(stores)]
    start = threading.Barrier(len(shippers))
    errors = []

    def run(shipper):
        try:
            start.wait()
            shipper.drain()
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            shipper.close()

    threads = [threading.Thread(target=run, args=(s,)) for s in shippers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []

    keys = [(source, id_) for source, id_, _, _ in written]
    assert len(keys) == len(set(keys)) == len(before)  # each row sent exactly once
    assert set(keys) == before
    assert world.outbox_keys() == set()
    checker = PostgresStore(history_url)
    assert set(all_documents(checker)) == before
    checker.close()
    per_aggregate: dict[tuple[str, str, int], list[int]] = {}
    for source, id_, aggregate_type, aggregate_id in written:
        per_aggregate.setdefault((source, aggregate_type, aggregate_id), []).append(id_)
    for ids in per_aggregate.values():
        assert ids == sorted(ids)


def test_retention_drops_old_partitions_only_and_never_the_outbox(db_url, world, store):
    now = datetime.now(UTC)
    alice = world.subscriber()
    pid = world.procedure(alice)
    cid = world.call(pid)
    world.conn.execute("delete from cp.event")  # the rows' own trigger events are not part of this scenario
    ancient = world.event("procedure", pid, "created", recorded_at=now - timedelta(days=100))
    recent = world.event("procedure", pid, "status_changed", recorded_at=now - timedelta(days=10))
    today = world.event("procedure", pid, "status_changed")
    old_log = world.carrier_log(cid, pid, logged_at=now - timedelta(days=10))
    new_log = world.carrier_log(cid, pid)
    Shipper(db_url, store).drain()
    assert len(store.partitions()) == 5

    late = world.event("procedure", pid, "late", recorded_at=now - timedelta(days=100))  # not shipped yet
    retention_run = PostgresStore(store.url)  # another process: the shipper's partition cache goes stale
    dropped = retention_run.apply_retention({"event": 30, "carrier_log": 5}, now=now)
    retention_run.close()

    day = lambda delta: f"{(now - timedelta(days=delta)).date():%Y%m%d}"  # noqa: E731
    assert sorted(dropped) == sorted([f"event_{day(100)}", f"carrier_log_{day(10)}"])
    assert set(all_documents(store)) == {("event", recent), ("event", today), ("carrier_log", new_log)}
    assert ("event", ancient) not in all_documents(store) and ("carrier_log", old_log) not in all_documents(store)
    assert world.outbox_keys() == {("event", late)}

    assert store.apply_retention({"event": 30, "carrier_log": 5}, now=now) == []
    Shipper(db_url, store).drain()  # the dropped day comes back for the late row
    assert ("event", late) in all_documents(store) and world.outbox_keys() == set()


def test_pin_and_oauth_token_never_reach_the_store(db_url, world, store, history_url):
    alice = world.subscriber("+447700900123")
    pid = world.procedure(alice)
    cid = world.call(pid, "optin")
    world.event("procedure", pid, "optin_sent", {
        "msisdn": "+447700900123", "pin": "4821", "sms": {"text": "Your PIN is 4821. Reply STOP to cancel"},
    })
    world.carrier_log(cid, pid, operation="optin", request={
        "headers": {"Authorization": "Bearer tok_Zq81SECRETaccess", "Content-Type": "application/json"},
        "body": {"endUserId": "tel:+447700900123", "pin": "4821"},
        "token_request": "grant_type=client_credentials&client_id=cp&client_secret=cs_5ecretValue",
    }, response={
        "status": 200,
        "body": '{"access_token":"tok_Zq81SECRETaccess","token_type":"Bearer","expires_in":3600}',
        "soap": "<RequestSOAPHeader><spId>35</spId><spPassword>md5Sp4ssw0rd</spPassword></RequestSOAPHeader>",
    })
    Shipper(db_url, store).drain()

    dump = subprocess.run([str(find_bindir() / "pg_dump"), "--data-only", history_url],
                          capture_output=True, text=True, check=True).stdout
    assert "optin_sent" in dump and "+4477****123" in dump
    for secret in ("4821", "tok_Zq81SECRETaccess", "cs_5ecretValue", "md5Sp4ssw0rd", "447700900123"):
        assert secret not in dump
    docs = timeline(store, "procedure", pid)
    sent = next(d for d in docs if d["source"] == "event" and d["kind"] == "optin_sent")
    assert sent["body"]["sms"]["text"] == "Your PIN is [REDACTED]. Reply STOP to cancel"
    log = next(d for d in docs if d["source"] == "carrier_log")
    assert log["body"]["request"]["headers"]["Content-Type"] == "application/json"


def test_daemon_loop_backs_off_while_the_store_is_down_then_catches_up(db_url, world, store):
    paid = world.payment_with_calls(world.subscriber(), calls=1)
    before = world.outbox_keys()
    failures = []

    def down_twice(n, _docs):
        if n <= 2:
            failures.append(n)
            raise StoreUnavailable("not yet")

    shipper = Shipper(db_url, WrappedStore(store, before=down_twice), batch_size=2)
    stop = threading.Event()
    results = []
    worker = threading.Thread(target=shipper.run, kwargs={
        "interval": 0.05, "stop": stop, "retention": False, "on_result": results.append})
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while world.outbox_keys() and time.monotonic() < deadline:
            time.sleep(0.05)
        late = world.event("procedure", paid["procedure_id"], "late")  # arrives while the loop idles
        while world.outbox_keys() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(timeout=30)
        shipper.close()
    assert failures == [1, 2] and sum(1 for r in results if r.errors) == 2
    assert set(all_documents(store)) == before | {("event", late)}
    assert world.outbox_keys() == set()
