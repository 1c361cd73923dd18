"""Concurrency: the same idempotency key from many connections at once, racing subscriptions of one
number to one product, and concurrent charges against one subscriber's spend cap. Threads start
together on a barrier; no timing is asserted. Each test runs on a single node and through the front
(`sql_api`: the racing connections are then the merchant's logins on the front)."""

from __future__ import annotations

import pytest
from psycopg.types.json import Jsonb

from tests.core.world import fire_together

pytestmark = pytest.mark.sql_api

CAPS_CARRIER = {
    "code": "test_caps", "name": "Test caps", "country": "NG", "mcc": "621", "mnc": "30", "currency": "NGN",
    "timezone": "Africa/Lagos", "number_ranges": ["+234809"], "regulation": "NG",
    "rules": {"cap_currency": "NGN", "daily_cap_minor": 30000},
    "operations": {"charge": {"pattern": "sync"}, "send_sms": {}},
}


def test_same_idempotency_key_from_eight_connections_charges_once(api_connect, conn):
    results = fire_together(api_connect, 8, "select api.charge('acme', '+2348020000006', 'gems', 'same-key')",
                            lambda i: ())
    assert [status for status, _ in results] == ["ok"] * 8, results
    documents = [doc for _, doc in results]
    assert all(doc == documents[0] for doc in documents), documents
    assert conn.execute("select count(*) from cp.procedure where kind = 'charge'").fetchone()[0] == 1
    assert conn.execute("select count(*) from cp.carrier_call where operation = 'charge'").fetchone()[0] == 1
    assert conn.execute("select count(*) from cp.call_queue").fetchone()[0] == 1
    assert conn.execute("select response from cp.idempotency where idem_key = 'same-key'").fetchone()[0] == documents[0]


def test_racing_subscribes_of_one_number_to_one_product_make_one_subscription(api_connect, conn):
    results = fire_together(api_connect, 6, "select api.subscribe('acme', '+2348020000077', 'club', 'daily', %s)",
                            lambda i: (f"race-{i}",))
    assert [status for status, _ in results] == ["ok"] * 6, results
    documents = [doc for _, doc in results]
    assert len({doc["id"] for doc in documents}) == 1, documents
    assert sorted(doc["existing"] for doc in documents) == [False] + [True] * 5
    assert conn.execute("select count(*) from cp.subscription s join cp.subscriber b using (subscriber_id) "
                        "where b.msisdn = '+2348020000077'").fetchone()[0] == 1
    assert conn.execute("select count(*) from cp.optin o join cp.subscriber b using (subscriber_id) "
                        "where b.msisdn = '+2348020000077'").fetchone()[0] == 1


def test_same_refund_key_from_eight_connections_refunds_once(api_connect, conn):
    pay = conn.execute("select api.charge('acme', '+2348020000008', 'gems', 'pay')").fetchone()[0]["id"]
    conn.execute("select adapter.claim_calls('test_ng', 10, interval '1 minute', 'w')")
    conn.execute("select adapter.complete_calls(%s)", (Jsonb([{
        "call_id": conn.execute("select call_id from cp.carrier_call where procedure_id = %s", (pay,)).fetchone()[0],
        "outcome": "succeeded"}]),))
    results = fire_together(api_connect, 8, "select api.refund('acme', %s, 'refund-key', 5000)", lambda i: (pay,))
    assert [status for status, _ in results] == ["ok"] * 8, results
    assert len({doc["id"] for _, doc in results}) == 1
    assert conn.execute("select count(*) from cp.procedure where kind = 'refund'").fetchone()[0] == 1


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_charges_near_a_cap_cannot_both_pass(api_connect, conn, round_):
    conn.execute("select admin.onboard_carrier(%s)", (Jsonb(CAPS_CARRIER),))
    conn.execute("select admin.add_price_point('acme', 'gems', 'one_time', 20000, 'NGN', 'gems_100', "
                 "p_carrier => 'test_caps')")
    msisdn = f"+2348090000{round_:03d}"
    # The daily cap is 30000 and each charge 20000: of two at once, exactly one may pass.
    results = fire_together(api_connect, 2, "select api.charge('acme', %s, 'gems', %s)",
                            lambda i: (msisdn, f"cap-{round_}-{i}"))
    statuses = sorted(status if status == "error" else "ok" for status, _ in results)
    assert statuses == ["error", "ok"], results
    assert [value for status, value in results if status == "error"] == ["CP021"], results
    spent = conn.execute("""select coalesce(sum(p.amount_minor), 0) from cp.procedure p
                            join cp.subscriber s using (subscriber_id) where s.msisdn = %s""", (msisdn,)).fetchone()[0]
    assert spent == 20000


def test_many_concurrent_charges_stop_at_the_cap(api_connect, conn):
    conn.execute("select admin.onboard_carrier(%s)", (Jsonb(CAPS_CARRIER),))
    conn.execute("select admin.add_price_point('acme', 'gems', 'one_time', 10000, 'NGN', 'gems_50', "
                 "p_carrier => 'test_caps')")
    results = fire_together(api_connect, 6, "select api.charge('acme', '+2348090001000', 'gems', %s, 10000)",
                            lambda i: (f"many-{i}",))
    assert sum(status == "ok" for status, _ in results) == 3, results
    assert sorted(value for status, value in results if status == "error") == ["CP021"] * 3
