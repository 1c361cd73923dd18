"""The ledger's balance check runs at COMMIT (a deferred constraint trigger), from any client."""

from __future__ import annotations

import psycopg
import pytest

from .world import load_world


def test_an_unbalanced_journal_fails_at_commit(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        load_world(conn)
        pay = conn.execute("select api.charge('acme', '+2348020000001', 'gems', 'k1')").fetchone()[0]["id"]
        account = conn.execute("select cp.ledger_account_id('platform_revenue', 'NGN')").fetchone()[0]
        other = conn.execute("select cp.ledger_account_id('tax_payable', 'NGN', p_country => 'NG')").fetchone()[0]
        conn.autocommit = False
        journal = conn.execute("insert into cp.journal (procedure_id, kind, currency, posted_at) "
                               "values (%s, 'charge', 'NGN', now()) returning journal_id", (pay,)).fetchone()[0]
        conn.execute("insert into cp.ledger_entry (journal_id, account_id, amount_minor) values (%s, %s, 100), "
                     "(%s, %s, -99)", (journal, account, journal, other))  # accepted for now: the check is deferred
        with pytest.raises(psycopg.Error) as failure:
            conn.commit()
        assert failure.value.sqlstate == "CP061"
        conn.rollback()
        conn.autocommit = True
        assert conn.execute("select count(*) from cp.journal").fetchone()[0] == 0
