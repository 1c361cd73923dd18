"""History fixtures: a history database per test on the session cluster, and a small world of
carriers, subscribers, payments and carrier calls whose outbox rows the tests write directly
(as the state-machine triggers and adapters do in production)."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.types.json import Jsonb

from carrierpay.history.stores import PostgresStore


@pytest.fixture
def history_url(pg_cluster):
    """URL of a history database that does not exist yet (the store creates it); dropped afterwards."""
    name = f"h_{uuid.uuid4().hex[:12]}"
    yield pg_cluster.url(name)
    with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as admin:
        admin.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def store(history_url):
    pg_store = PostgresStore(history_url)
    pg_store.ensure_ready()
    yield pg_store
    pg_store.close()


class World:
    """Rows of the payment database, inserted as the owner, with what tests need to refer to them."""

    _counter = itertools.count(1)

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        conn.execute("insert into cp.regulation (code, name, source) values ('uk', 'UK', 'PSRA code 15')")
        conn.execute("insert into cp.country (country, name, vat_bp) values ('GB', 'United Kingdom', 2000) "
                     "on conflict do nothing")
        self.carrier_id = self._one(
            "insert into cp.carrier (code, name, country, mcc, mnc, currency, timezone, regulation_code, spec) "
            "values ('uk_one', 'UK One', 'GB', '234', '10', 'GBP', 'Europe/London', 'uk', '{}') returning carrier_id"
        )
        self.merchant_id = self._one(
            "insert into cp.merchant (code, name, db_role, webhook_secret) "
            "values ('games', 'Games Ltd', 'merchant_games', 'whsec') returning merchant_id"
        )
        self.product_id = self._one(
            "insert into cp.product (merchant_id, code, name) values (%s, 'gold', 'Gold') returning product_id",
            self.merchant_id,
        )
        self.price_point_id = self._one(
            "insert into cp.price_point (product_id, carrier_id, plan, amount_minor, currency, variant) "
            "values (%s, %s, 'monthly', 499, 'GBP', 'gold-m') returning price_point_id",
            self.product_id, self.carrier_id,
        )

    def _one(self, query: str, *params):
        return self.conn.execute(query, params).fetchone()[0]

    def subscriber(self, msisdn: str | None = None) -> int:
        msisdn = msisdn or f"+4477009{next(self._counter):05d}"
        return self._one("insert into cp.subscriber (msisdn, carrier_id) values (%s, %s) returning subscriber_id",
                         msisdn, self.carrier_id)

    def subscription(self, subscriber_id: int) -> int:
        return self._one(
            "insert into cp.subscription (merchant_id, subscriber_id, carrier_id, product_id, plan, status, "
            "price_point_id, status_since) values (%s, %s, %s, %s, 'monthly', 'active', %s, now()) "
            "returning subscription_id",
            self.merchant_id, subscriber_id, self.carrier_id, self.product_id, self.price_point_id,
        )

    def procedure(self, subscriber_id: int, *, kind: str = "charge", subscription_id: int | None = None,
                  parent_id: int | None = None) -> int:
        return self._one(
            "insert into cp.procedure (kind, merchant_id, subscriber_id, carrier_id, product_id, subscription_id, "
            "parent_id, amount_minor, currency, created_at, updated_at) "
            "values (%s, %s, %s, %s, %s, %s, %s, 499, 'GBP', now(), now()) returning procedure_id",
            kind, self.merchant_id, subscriber_id, self.carrier_id, self.product_id, subscription_id, parent_id,
        )

    def call(self, procedure_id: int, operation: str = "charge") -> int:
        return self._one(
            "insert into cp.carrier_call (call_id, procedure_id, carrier_id, operation, safe_to_repeat, correlator, "
            "created_at) overriding system value"
            " select n.id, %s, %s, %s, false, 'cp-' || n.id, now()"
            " from (select nextval(pg_get_serial_sequence('cp.carrier_call', 'call_id')) as id) n returning call_id",
            procedure_id, self.carrier_id, operation,
        )

    def event(self, aggregate_type: str, aggregate_id: int, kind: str, payload: dict | None = None,
              *, recorded_at: datetime | None = None) -> int:
        return self._one(
            "insert into cp.event (aggregate_type, aggregate_id, kind, occurred_at, recorded_at, payload) "
            "values (%s, %s, %s, cp.clock_now(), coalesce(%s, clock_timestamp()), %s) returning event_id",
            aggregate_type, aggregate_id, kind, recorded_at, Jsonb(payload or {}),
        )

    def carrier_log(self, call_id: int, procedure_id: int, *, request: dict | None = None,
                    response: dict | None = None, outcome: str = "succeeded", logged_at: datetime | None = None,
                    operation: str = "charge") -> int:
        return self._one(
            "insert into cp.carrier_log (call_id, procedure_id, carrier_id, operation, outcome, carrier_code, "
            "latency_ms, request, response, logged_at) "
            "values (%s, %s, %s, %s, %s, '0', 42, %s, %s, coalesce(%s, clock_timestamp())) returning log_id",
            call_id, procedure_id, self.carrier_id, operation, outcome, Jsonb(request or {}), Jsonb(response or {}),
            logged_at,
        )

    def outbox_keys(self) -> set[tuple[str, int]]:
        events = self.conn.execute("select event_id from cp.event").fetchall()
        logs = self.conn.execute("select log_id from cp.carrier_log").fetchall()
        return {("event", r[0]) for r in events} | {("carrier_log", r[0]) for r in logs}

    def payment_with_calls(self, subscriber_id: int, calls: int = 2, subscription_id: int | None = None) -> dict:
        """A charge that goes pending → in_flight → succeeded over `calls` carrier attempts."""
        pid = self.procedure(subscriber_id, subscription_id=subscription_id)
        mine = [("event", self.event("procedure", pid, "created", {"status": "pending"}))]
        mine.append(("event", self.event("procedure", pid, "status_changed", {"from": "pending", "to": "in_flight"})))
        for attempt in range(1, calls + 1):
            cid = self.call(pid)
            mine.append(("event", self.event("carrier_call", cid, "queued", {"procedure_id": pid, "attempt": attempt})))
            mine.append(("event", self.event("carrier_call", cid, "leased", {"procedure_id": pid})))
            outcome = "succeeded" if attempt == calls else "transient"
            mine.append(("carrier_log", self.carrier_log(cid, pid, outcome=outcome,
                                                         request={"amount": 499, "attempt": attempt},
                                                         response={"status": outcome})))
            mine.append(("event", self.event("carrier_call", cid, "done" if attempt == calls else "failed",
                                             {"procedure_id": pid, "outcome": outcome})))
        mine.append(("event", self.event("procedure", pid, "status_changed",
                                         {"from": "in_flight", "to": "succeeded"})))
        return {"procedure_id": pid, "documents": mine}


@pytest.fixture
def world(conn) -> World:
    return World(conn)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)
