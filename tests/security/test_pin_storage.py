"""No PIN stays in the database once its SMS is with the carrier.

A PIN opt-in stores only a hash of the PIN; the SMS that carries it needs its text only until the
carrier has it. These tests send PIN SMS (through adapter.claim_calls / adapter.complete_calls as
an adapter does, and end to end through the adapter daemon and the carrier simulators), then read
every row of every table of every schema, as text, for each PIN, and ship the history and read
the history store the same way.
"""

from __future__ import annotations

import re
import sys
import uuid
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from carrierpay.history.shipper import Shipper
from carrierpay.history.stores import PostgresStore
from tests.core.world import load_world
from tests.security.conftest import role_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemons"))
from harness import CARRIERS, MERCHANT, PRODUCT, World, msisdn  # noqa: E402

TABLES = """
select n.nspname, c.relname from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')
  and n.nspname !~ '^pg_(toast|temp)'
order by 1, 2
"""


def pin_pattern(pin: str) -> str:
    """The PIN as a number of its own: not part of a longer number, nor a timestamp's microseconds."""
    return rf"(?<![0-9])(?<![0-9]:[0-9][0-9]\.){pin}(?![0-9])"


def rows_holding(url: str, pins: list[str]) -> dict[str, int]:
    """'schema.table' -> how many of its rows, read whole as text, show one of the PINs."""
    pattern = "|".join(f"({pin_pattern(pin)})" for pin in pins)
    found = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for schema, table in conn.execute(TABLES).fetchall():
            count = conn.execute(sql.SQL("select count(*) from {}.{} t where t::text ~ %s").format(
                sql.Identifier(schema), sql.Identifier(table)), [pattern]).fetchone()[0]
            if count:
                found[f"{schema}.{table}"] = count
    return found


def test_pins_sent_through_the_adapter_functions_leave_no_trace(db_url):
    with psycopg.connect(db_url, autocommit=True) as owner:
        load_world(owner)
    with psycopg.connect(role_url(db_url, "cp_merchant_acme"), autocommit=True) as merchant:
        for n in (1, 2, 3):
            merchant.execute("select api.request_optin('acme', %s, 'gems', %s)", [f"+44770090010{n}", f"p{n}"])
        merchant.execute("select api.subscribe('acme', '+2348020000101', 'club', 'daily', 'p4')")
        merchant.execute("select api.request_optin('acme', '+2348020000102', 'gems', 'p5')")

    with psycopg.connect(db_url, autocommit=True) as adapter, psycopg.connect(db_url, autocommit=True) as owner:
        adapter.execute("set role carrierpay_adapter")

        def claim() -> dict[int, str]:
            calls = [row[0] for code in ("test_gb", "test_ng") for row in adapter.execute(
                "select adapter.claim_calls(%s, 100, interval '1 minute', 'test')", [code]).fetchall()]
            return {call["call_id"]: call["text"] for call in calls}

        texts = claim()  # what the carriers are asked to deliver
        pins = {call_id: re.search(r"is (\d+)\.", text).group(1) for call_id, text in texts.items()}
        assert len(pins) == 5 and all(len(pin) == 6 for pin in pins.values())
        sent, transient, accepted, lost, refused = sorted(pins)
        # A connector that logged the whole text, a failure before the carrier was reached (sent
        # again), an accepted SMS whose receipt comes later, an answer lost on the way, a refusal.
        adapter.execute("select adapter.complete_calls(%s)", [Jsonb([
            {"call_id": sent, "outcome": "succeeded", "request": {"body": {"message": texts[sent]}}},
            {"call_id": transient, "outcome": "failed", "reason": "transient"},
            {"call_id": accepted, "outcome": "pending", "carrier_ref": "SM-1",
             "response": {"status": "accepted", "echo": texts[accepted]}},
            {"call_id": lost, "outcome": "unknown", "reason": "timeout"},
            {"call_id": refused, "outcome": "failed", "reason": "rejected"},
        ])])
        adapter.execute("select adapter.record_callback('test_gb', %s)",
                        [Jsonb({"carrier_ref": "SM-1", "outcome": "succeeded", "dedupe_key": "dlr-1"})])
        # Only the new attempt of the SMS that never reached its carrier holds a PIN: its own (which
        # also shows the search finds a PIN where there is one).
        assert rows_holding(db_url, [pins[transient]]) == {"cp.carrier_call": 1}
        assert rows_holding(db_url, [pin for call_id, pin in pins.items() if call_id != transient]) == {}

        owner.execute("select admin.advance_clock(interval '1 minute')")
        again = claim()
        assert [re.search(r"is (\d+)\.", text).group(1) for text in again.values()] == [pins[transient]]
        adapter.execute("select adapter.complete_calls(%s)",
                        [Jsonb([{"call_id": call_id, "outcome": "succeeded"} for call_id in again])])
    assert rows_holding(db_url, list(pins.values())) == {}


async def test_pins_sent_end_to_end_leave_no_trace_in_the_database_nor_the_history(db_url, pg_cluster):
    numbers = {code: msisdn(code, 401) for code in CARRIERS}
    async with World(db_url, gb_rules={}) as world:
        for n, (code, number) in enumerate(numbers.items()):
            world.sims[code].add_subscriber(number, 1_000)
            await world.one("select api.request_optin(%s, %s, %s, %s)", MERCHANT, number, PRODUCT, f"e2e-{n}")
        await world.wait_until("select count(*) = 4 and bool_and(status = 'succeeded') from cp.procedure "
                               "where kind = 'sms'")
        pins = {code: re.search(r"is (\d+)\.", world.sims[code].texts_to(number)[-1]).group(1)
                for code, number in numbers.items()}
        optin = await world.one("select max(optin_id) from cp.optin o join cp.subscriber s using (subscriber_id) "
                                "where s.msisdn = %s", numbers["oneapi_gb"])
        confirmed = await world.one("select api.confirm_optin(%s, %s, %s)", MERCHANT, optin, pins["oneapi_gb"])
        assert confirmed["status"] == "confirmed"
        assert await world.one("select count(*) from cp.carrier_log where operation = 'send_sms'") >= 4

    assert rows_holding(db_url, list(pins.values())) == {}

    history_db = f"h_{uuid.uuid4().hex[:12]}"
    history_url = pg_cluster.url(history_db)
    store = PostgresStore(history_url)
    shipper = Shipper(db_url, store)
    try:
        shipped = shipper.drain()
        assert shipped.logs >= 4 and shipped.events > 0
        assert rows_holding(history_url, list(pins.values())) == {}
    finally:
        shipper.close()
        with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(history_db)))
