"""A merchant subscribing one number to one product twice, through its own database role: with a second
idempotency key, from connections racing each other, or once by the API while the subscriber texts the
keyword. Every way ends with one live subscription and one charge per period."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.core.world import fire_together
from tests.security.conftest import role_url

NUMBER = "+2348020000050"
ZA_CARRIER = {
    "code": "test_za", "name": "Test ZA", "country": "ZA", "mcc": "655", "mnc": "01", "currency": "ZAR",
    "timezone": "Africa/Johannesburg", "number_ranges": ["+2782"], "throughput": {"tps": 1000}, "regulation": "ZA",
    "transport": "smpp", "smpp": {"source_short_codes": ["33001"]},
    "operations": {"send_sms": {"pattern": "callback", "safe_to_repeat": True},
                   "charge": {"pattern": "callback", "safe_to_repeat": False}},
}


def merchant_url(url: str) -> str:
    return role_url(url, "cp_merchant_acme")


def live(conn, number: str) -> list[int]:
    return [row[0] for row in conn.execute(
        "select s.subscription_id from cp.subscription s join cp.subscriber b using (subscriber_id) "
        "where b.msisdn = %s and s.status <> 'cancelled' order by 1", [number])]


def pin_for(conn, number: str) -> str:
    """Play the adapter that sends PIN texts (a PIN is checked only once sent) and read the latest off the handset."""
    pins = []
    for (doc,) in conn.execute("select adapter.claim_calls('test_ng', 1000, interval '1 minute', 'sms-worker')"):
        if doc["operation"] != "send_sms":
            continue
        if doc.get("msisdn") == number and "PIN" in doc.get("text", ""):
            pins.append(re.search(r"PIN for .* is ([0-9]+)", doc["text"]).group(1))
        conn.execute("select adapter.complete_calls(%s)",
                     [Jsonb([{"call_id": doc["call_id"], "outcome": "succeeded"}])])
    if pins:
        return pins[-1]
    raise AssertionError(f"no PIN text waiting for {number}")


def settle_charges(owner, number: str, outcome: str = "succeeded") -> int:
    """Play the adapter: claim what is ready and answer every charge of this number."""
    owner.execute("select adapter.claim_calls('test_ng', 1000, interval '1 minute', 'sec-worker')").fetchall()
    calls = [row[0] for row in owner.execute(
        "select c.call_id from cp.carrier_call c join cp.subscriber b on b.msisdn = c.params->>'msisdn' "
        "where c.operation = 'charge' and c.status = 'leased' and b.msisdn = %s", [number])]
    if calls:
        owner.execute("select adapter.complete_calls(%s)",
                      [Jsonb([{"call_id": call, "outcome": outcome} for call in calls])])
    return len(calls)


def test_a_second_key_finds_the_live_subscription_and_each_period_is_charged_once(world_url):
    with psycopg.connect(world_url, autocommit=True) as owner, \
            psycopg.connect(merchant_url(world_url), autocommit=True) as merchant:
        subscribe = "select api.subscribe('acme', %s, 'club', 'daily', %s)"
        first = merchant.execute(subscribe, [NUMBER, "sub-1"]).fetchone()[0]
        second = merchant.execute(subscribe, [NUMBER, "sub-2"]).fetchone()[0]
        assert (second["id"], second["existing"], first["existing"]) == (first["id"], True, False)
        assert second["optin_id"] == first["optin_id"]
        confirmed = merchant.execute("select api.confirm_optin('acme', %s, %s)",
                                     [first["optin_id"], pin_for(owner, NUMBER)]).fetchone()[0]
        assert confirmed["status"] == "confirmed"
        third = merchant.execute(subscribe, [NUMBER, "sub-3"]).fetchone()[0]
        assert (third["id"], third["status"], third["existing"]) == (first["id"], "active", True)
        assert live(owner, NUMBER) == [first["id"]]

        assert settle_charges(owner, NUMBER) == 1
        owner.execute("select admin.advance_clock(interval '1 day 1 minute')")
        owner.execute("select sched.run_due()")
        assert settle_charges(owner, NUMBER) == 1
        periods = owner.execute(
            "select p.period_index, count(*) from cp.procedure p join cp.subscriber b using (subscriber_id) "
            "where b.msisdn = %s and p.kind = 'charge' group by 1 order by 1", [NUMBER]).fetchall()
        assert periods == [(0, 1), (1, 1)]


@pytest.mark.parametrize("round_", range(3))
def test_racing_subscribes_with_different_keys_make_one_subscription(world_url, round_):
    number = f"+23480200001{round_:02d}"
    results = fire_together(merchant_url(world_url), 6, "select api.subscribe('acme', %s, 'club', 'daily', %s)",
                            lambda i: (number, f"race-{round_}-{i}"))
    assert [status for status, _ in results] == ["ok"] * 6, results
    documents = [doc for _, doc in results]
    assert len({doc["id"] for doc in documents}) == 1, documents
    assert sorted(doc["existing"] for doc in documents) == [False] + [True] * 5
    with psycopg.connect(world_url, autocommit=True) as owner:
        assert live(owner, number) == [documents[0]["id"]]
        assert owner.execute("select count(*) from cp.optin o join cp.subscriber b using (subscriber_id) "
                             "where b.msisdn = %s", [number]).fetchone()[0] == 1


@pytest.mark.parametrize("round_", range(3))
def test_the_api_racing_an_sms_keyword_makes_one_subscription(world_url, round_):
    number = f"+278200001{round_:02d}"
    with psycopg.connect(world_url, autocommit=True) as owner:
        owner.execute("select admin.onboard_carrier(%s)", [Jsonb(ZA_CARRIER)])
        owner.execute("select admin.add_price_point('acme', 'club', 'daily', 500, 'ZAR', 'club_day', "
                      "p_carrier => 'test_za')")
        owner.execute("select admin.add_sms_keyword('test_za', '33001', 'GEMS', 'acme', 'club', 'daily')")
    mo = Jsonb({"msisdn": number, "short_code": "33001", "text": "SUB GEMS", "carrier_msg_id": f"race-{round_}"})
    barrier = threading.Barrier(2)

    def by_sms():
        with psycopg.connect(world_url, autocommit=True) as adapter:
            barrier.wait(timeout=30)
            return adapter.execute("select adapter.record_mo('test_za', %s)", [mo]).fetchone()[0]

    def by_api():
        with psycopg.connect(merchant_url(world_url), autocommit=True) as merchant:
            barrier.wait(timeout=30)
            return merchant.execute("select api.subscribe('acme', %s, 'club', 'daily', %s)",
                                    [number, f"api-{round_}"]).fetchone()[0]

    with ThreadPoolExecutor(max_workers=2) as pool:
        sms, api = pool.submit(by_sms), pool.submit(by_api)
        sms_doc, api_doc = sms.result(), api.result()
    assert sms_doc["subscription_id"] == api_doc["id"], (sms_doc, api_doc)
    with psycopg.connect(world_url, autocommit=True) as owner:
        assert live(owner, number) == [api_doc["id"]]


def test_a_merchant_cannot_write_a_second_subscription_around_the_api(world_url):
    with psycopg.connect(merchant_url(world_url), autocommit=True) as merchant:
        merchant.execute("select api.subscribe('acme', %s, 'club', 'daily', 'direct-1')", [NUMBER])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            merchant.execute("insert into cp.subscription select * from cp.subscription")
    with psycopg.connect(world_url, autocommit=True) as owner:
        # Even the owner, writing the table directly, cannot make a second live one.
        with pytest.raises(psycopg.errors.UniqueViolation):
            owner.execute(
                "insert into cp.subscription (merchant_id, subscriber_id, carrier_id, product_id, plan, status, "
                "price_point_id, status_since) select merchant_id, subscriber_id, carrier_id, product_id, plan, "
                "'active', price_point_id, now() from cp.subscription")
        assert len(live(owner, NUMBER)) == 1
