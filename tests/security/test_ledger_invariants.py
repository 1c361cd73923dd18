"""The ledger and the payment records hold their rules for any writer, the database owner included.

These tests write the tables directly, as the owner would (or a buggy function running as it), and
commit: what the triggers let through is what the books would say.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.core.world import claim, load_world, pin_sent_to, settle


def _account(conn: psycopg.Connection, kind: str, currency: str, country: str | None = None) -> int:
    return conn.execute("select cp.ledger_account_id(%s::cp.account_kind, %s, p_country => %s)",
                        [kind, currency, country]).fetchone()[0]


def _paid_charge(conn: psycopg.Connection, key: str = "paid-1", msisdn: str = "+2348020000001") -> int:
    """A charge settled through the platform, committed: its journal is posted."""
    charge = conn.execute("select api.charge('acme', %s, 'gems', %s)", [msisdn, key]).fetchone()[0]
    claim(conn, "test_ng")
    settle(conn, charge["id"], "succeeded")
    return charge["id"]


def _ledger(conn: psycopg.Connection) -> tuple:
    return conn.execute("select (select count(*) from cp.journal), (select count(*) from cp.ledger_entry), "
                        "(select coalesce(sum(amount_minor), 0) from cp.ledger_entry)").fetchone()


def _commit_fails(conn: psycopg.Connection, *statements: tuple[str, list]) -> str:
    """Run the statements in one transaction and return the SQLSTATE its commit (or a statement) raised."""
    conn.autocommit = False
    try:
        with pytest.raises(psycopg.Error) as failure:
            for sql, params in statements:
                conn.execute(sql, params)
            conn.commit()
        return failure.value.sqlstate
    finally:
        conn.rollback()
        conn.autocommit = True


def _journal(procedure_id: int, currency: str) -> tuple[str, list]:
    return ("insert into cp.journal (procedure_id, kind, currency, posted_at) values (%s, 'charge', %s, now())",
            [procedure_id, currency])


def _entry(account: int, amount: int) -> tuple[str, list]:
    return ("insert into cp.ledger_entry (journal_id, account_id, amount_minor) "
            "values (currval(pg_get_serial_sequence('cp.journal', 'journal_id')), %s, %s)", [account, amount])


@pytest.fixture
def world(conn):
    load_world(conn)
    return conn


def test_a_journal_balances_in_each_currency(world):
    conn = world
    pay = _paid_charge(conn)
    before = _ledger(conn)
    ngn, gbp = _account(conn, "platform_revenue", "NGN"), _account(conn, "platform_revenue", "GBP")
    # +100 naira against -100 pounds sums to zero, and is not a balanced journal.
    assert _commit_fails(conn, _journal(pay, "NGN"), _entry(ngn, 100), _entry(gbp, -100)) == "CP061"
    assert _commit_fails(conn, _journal(pay, "NGN"), _entry(ngn, 100),
                         _entry(_account(conn, "tax_payable", "NGN", "NG"), -99)) == "CP061"
    # Balanced, but on accounts of a currency that is not the journal's.
    assert _commit_fails(conn, _journal(pay, "NGN"), _entry(gbp, 100),
                         _entry(_account(conn, "tax_payable", "GBP", "GB"), -100)) == "CP067"
    assert _ledger(conn) == before


def test_a_journal_has_at_least_two_entries(world):
    conn = world
    pay = _paid_charge(conn)
    before = _ledger(conn)
    assert _commit_fails(conn, _journal(pay, "NGN")) == "CP065"
    assert _commit_fails(conn, _journal(pay, "NGN"), _entry(_account(conn, "platform_revenue", "NGN"), 100)) == "CP065"
    assert _ledger(conn) == before


def test_a_posted_journal_is_closed(world):
    conn = world
    pay = _paid_charge(conn)
    journal = conn.execute("select journal_id from cp.journal where procedure_id = %s", [pay]).fetchone()[0]
    before = _ledger(conn)
    a, b = _account(conn, "platform_revenue", "NGN"), _account(conn, "tax_payable", "NGN", "NG")
    pair = ("insert into cp.ledger_entry (journal_id, account_id, amount_minor) values (%s, %s, 100), (%s, %s, -100)",
            [journal, a, journal, b])
    # A balanced pair slipped into the committed charge journal: refused at once, in any transaction.
    assert _commit_fails(conn, pair) == "CP066"
    with pytest.raises(psycopg.Error) as failure:
        conn.execute(*pair)
    assert failure.value.sqlstate == "CP066"
    # In the posting transaction, after its check has been forced early, an extra entry is checked at once.
    assert _commit_fails(conn, _journal(pay, "NGN"), _entry(a, 100), _entry(b, -100),
                         ("set constraints all immediate", []), _entry(a, 5)) == "CP061"
    assert _ledger(conn) == before
    # The platform's own postings (here a refund's compensating journal) are new journals, and commit.
    conn.execute("select api.refund('acme', %s, 'r1', 5000, 'goodwill')", [pay])
    refund = conn.execute("select procedure_id from cp.procedure where kind = 'refund'").fetchone()[0]
    call = conn.execute("select call_id from cp.carrier_call where procedure_id = %s", [refund]).fetchone()[0]
    conn.execute("select adapter.claim_calls('test_ng', 10, interval '1 minute', 't')")
    conn.execute("select adapter.complete_calls(%s)", [Jsonb([{"call_id": call, "outcome": "succeeded"}])])
    journals = conn.execute("select j.kind, count(*) from cp.journal j join cp.ledger_entry using (journal_id) "
                            "group by j.journal_id, j.kind order by j.journal_id").fetchall()
    assert journals == [("charge", 5), ("refund", 5)]
    assert _ledger(conn)[2] == 0


def test_the_balance_check_runs_once_per_journal_not_once_per_entry(world):
    conn = world
    charges = [conn.execute("select api.charge('acme', %s, 'gems', %s)", [f"+23480200001{i:02d}", f"b{i}"])
               .fetchone()[0]["id"] for i in range(10)]
    calls = [row["call_id"] for row in claim(conn, "test_ng")]
    assert len(calls) == len(charges)
    with conn.transaction():
        conn.execute("set local track_functions = 'pl'")
        conn.execute("select adapter.complete_calls(%s)",
                     [Jsonb([{"call_id": call, "outcome": "succeeded"} for call in calls])])
        conn.execute("set constraints all immediate")  # run the commit-time checks now, to count them
        counts = dict(conn.execute("select funcname, calls from pg_stat_xact_user_functions "
                                   "where schemaname = 'cp' and funcname in "
                                   "('assert_journal_balanced', 'tg_ledger_entry__journal_open')").fetchall())
    assert conn.execute("select count(*), count(distinct journal_id) from cp.ledger_entry").fetchone() == (50, 10)
    assert counts == {"assert_journal_balanced": 10, "tg_ledger_entry__journal_open": 1}


def test_procedures_are_born_pending(world):
    conn = world
    _paid_charge(conn)
    merchant, subscriber, carrier = conn.execute(
        "select merchant_id, subscriber_id, carrier_id from cp.procedure limit 1").fetchone()
    insert = ("insert into cp.procedure (kind, status, merchant_id, subscriber_id, carrier_id, amount_minor, currency, "
              "collected_minor, refunded_minor, created_at, updated_at) "
              "values ('charge', %s, %s, %s, %s, 500, 'NGN', %s, %s, now(), now())")
    before = conn.execute("select count(*) from cp.procedure").fetchone()[0]
    for status, collected, refunded in [("succeeded", 500, 0), ("in_flight", 0, 0), ("unknown", 0, 0),
                                        ("failed", 0, 0), ("refunded", 500, 500), ("partially_refunded", 500, 100),
                                        ("pending", 500, 0)]:
        with pytest.raises(psycopg.Error) as failure:
            conn.execute(insert, [status, merchant, subscriber, carrier, collected, refunded])
        assert failure.value.sqlstate == "CP068", status
    assert conn.execute("select count(*) from cp.procedure").fetchone()[0] == before
    conn.execute(insert, ["pending", merchant, subscriber, carrier, 0, 0])
    # Every way the platform creates procedures (a charge, a refund, a PIN SMS) creates them pending.
    pay = conn.execute("select procedure_id from cp.procedure where status = 'succeeded'").fetchone()[0]
    conn.execute("select api.refund('acme', %s, 'r1', 5000)", [pay])
    conn.execute("select api.request_optin('acme', '+447700900001', 'gems', 'o1')")
    born = conn.execute("select p.kind::text, e.payload->>'to' from cp.event e join cp.procedure p "
                        "on p.procedure_id = e.aggregate_id where e.aggregate_type = 'procedure' "
                        "and e.kind = 'created' order by 1").fetchall()
    assert {kind for kind, _ in born} == {"charge", "refund", "sms"}
    assert {status for _, status in born} == {"pending"}


def test_consent_is_never_changed_or_removed(world):
    conn = world
    conn.execute("select api.request_optin('acme', '+447700900001', 'gems', 'o1')")
    optin = conn.execute("select optin_id from cp.optin").fetchone()[0]
    conn.execute("select api.confirm_optin('acme', %s, %s)", [optin, pin_sent_to(conn, "+447700900001")])
    consent = conn.execute("select consent_id, method, evidence, given_at from cp.consent").fetchall()
    assert len(consent) == 1
    for sql in ("update cp.consent set method = 'forged'", "update cp.consent set given_at = given_at - interval '1 y'",
                "delete from cp.consent", "truncate cp.consent"):
        with pytest.raises(psycopg.Error) as failure:
            conn.execute(sql)
        assert failure.value.sqlstate == "CP069", sql
    assert conn.execute("select consent_id, method, evidence, given_at from cp.consent").fetchall() == consent
