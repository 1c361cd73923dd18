"""The ledger fold (sched.fold_ledger) keeps the ledger views exact: after random payments and
refunds, report.ledger_balances and report.unbalanced_journals equal the sums over every entry before
any fold, after folds, with journals past the watermark, and around a journal whose transaction was
still open when the fold passed its id (committed later: counted, then folded once; rolled back:
forgotten once its transaction has ended, never before)."""

from __future__ import annotations

import random

import psycopg

from tests.core.world import load_world

# The full scans the fold-backed views replace.
SCANNED_BALANCES = """
select a.kind::text, coalesce(c.code, m.code, a.country, 'platform'), a.currency::text,
       coalesce(sum(e.amount_minor), 0)::bigint
from cp.ledger_account a
left join cp.ledger_entry e using (account_id)
left join cp.carrier c on c.carrier_id = a.carrier_id
left join cp.merchant m on m.merchant_id = a.merchant_id
group by a.account_id, a.kind, c.code, m.code, a.country, a.currency
order by 1, 2, 3
"""
SCANNED_UNBALANCED = """
select journal_id, sum(amount_minor)::bigint from cp.ledger_entry group by journal_id
having sum(amount_minor) <> 0 order by 1
"""
REPORTED_BALANCES = """
select kind::text, owner, currency::text, balance_minor from report.ledger_balances order by 1, 2, 3
"""
REPORTED_UNBALANCED = "select journal_id, off_by_minor from report.unbalanced_journals order by 1"


def _assert_exact(conn, when: str) -> None:
    assert conn.execute(REPORTED_BALANCES).fetchall() == conn.execute(SCANNED_BALANCES).fetchall(), when
    assert conn.execute(REPORTED_UNBALANCED).fetchall() == conn.execute(SCANNED_UNBALANCED).fetchall(), when
    assert conn.execute("select count(*) from report.ledger_audit").fetchone()[0] == 0, when


def _random_payments(conn, rng: random.Random, start: int, count: int) -> None:
    """Charges settled at random (most succeed), and refunds of some succeeded ones, whole or in part."""
    ids = []
    for n in range(start, start + count):
        ids.append(conn.execute("select (api.charge('acme', %s, 'gems', %s)->>'id')::bigint",
                                [f"+234802{n % 50:07d}", f"lf{n}"]).fetchone()[0])
    conn.execute("select pg_temp.claim('test_ng')")
    paid = []
    for procedure_id in ids:
        outcome = "succeeded" if rng.random() < 0.8 else "failed"
        conn.execute("select pg_temp.settle(%s, %s, %s)",
                     [procedure_id, outcome, "insufficient_funds" if outcome == "failed" else None])
        if outcome == "succeeded":
            paid.append(procedure_id)
    for procedure_id in rng.sample(paid, k=len(paid) // 3):
        amount = rng.choice([None, 7, 1999])
        refund = conn.execute("select (api.refund('acme', %s, %s, %s)->>'id')::bigint",
                              [procedure_id, f"rf{procedure_id}", amount]).fetchone()[0]
        conn.execute("select pg_temp.claim('test_ng')")
        conn.execute("select pg_temp.settle(%s, 'succeeded')", [refund])


def _post_held_journal(conn) -> int:
    """A balanced journal posted by a transaction the caller keeps open."""
    return conn.execute("""
        select cp.post_journal(p.procedure_id, 'charge', p.currency, array[a.account_id, b.account_id],
                               array[500, -500]::bigint[])
        from (select procedure_id, currency from cp.procedure where kind = 'charge' order by procedure_id limit 1) p
        cross join lateral (select account_id from cp.ledger_account where currency = p.currency
                            order by account_id limit 1) a
        cross join lateral (select account_id from cp.ledger_account where currency = p.currency
                            order by account_id desc limit 1) b
    """).fetchone()[0]


def _stragglers(conn) -> list[int]:
    return [r[0] for r in conn.execute("select journal_id from cp.ledger_straggler order by 1").fetchall()]


def test_fold_backed_ledger_views_equal_the_full_sums(db_url):
    rng = random.Random(20261203)
    with (psycopg.connect(db_url, autocommit=True) as conn, psycopg.connect(db_url) as held,
          psycopg.connect(db_url) as lost):
        load_world(conn)
        _random_payments(conn, rng, 0, 12)
        _assert_exact(conn, "before any fold")
        assert conn.execute("select sched.fold_ledger(5)").fetchone()[0] == 5
        _assert_exact(conn, "after a partial fold, the rest past the watermark")
        while conn.execute("select sched.fold_ledger()").fetchone()[0]:
            pass
        assert conn.execute("select checked_through from cp.ledger_fold").fetchone()[0] == \
            conn.execute("select max(journal_id) from cp.journal").fetchone()[0]
        _assert_exact(conn, "everything folded")
        _random_payments(conn, rng, 100, 8)
        _assert_exact(conn, "new journals past the watermark")

        # Two journals whose transactions stay open while later ones are posted and folded.
        kept = _post_held_journal(held)
        dropped = _post_held_journal(lost)
        _random_payments(conn, rng, 200, 6)
        conn.execute("select sched.fold_ledger()")
        assert _stragglers(conn) == sorted([kept, dropped])
        _assert_exact(conn, "the fold passed two journals still being posted")
        conn.execute("select sched.fold_ledger()")
        assert _stragglers(conn) == sorted([kept, dropped]), "kept while their transactions run"

        held.commit()
        _assert_exact(conn, "a passed journal committed: counted before the next fold")
        conn.execute("select sched.fold_ledger()")
        assert _stragglers(conn) == [dropped], "the committed one is folded"
        _assert_exact(conn, "after folding the late journal")
        conn.execute("select sched.fold_ledger()")
        _assert_exact(conn, "folded once, not twice")

        lost.rollback()
        conn.execute("select sched.fold_ledger()")
        assert _stragglers(conn) == [], "the rolled-back id is forgotten once its transaction ended"
        _random_payments(conn, rng, 300, 6)
        conn.execute("select sched.fold_ledger()")
        _assert_exact(conn, "at the end")
        balances = dict(((k, o), b) for k, o, _c, b in conn.execute(REPORTED_BALANCES).fetchall())
        assert balances[("carrier_receivable", "test_ng")] > 0  # the check covers real money


def test_an_unbalanced_journal_is_listed_before_and_after_its_fold(db_url):
    """Written with the ledger's triggers off (what the views exist to catch): listed from the unfolded
    entries, then from what the fold found, never twice; report.ledger_audit agrees."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        load_world(conn)
        _random_payments(conn, random.Random(7), 0, 4)
        conn.execute("select sched.fold_ledger()")
        with conn.transaction():
            conn.execute("set local session_replication_role = replica")
            journal = _post_held_journal(conn)
            conn.execute("insert into cp.ledger_entry (journal_id, account_id, amount_minor) "
                         "select %s, min(account_id), 3 from cp.ledger_account", [journal])
        assert conn.execute(REPORTED_UNBALANCED).fetchall() == [(journal, 3)]
        conn.execute("select sched.fold_ledger()")
        assert conn.execute("select journal_id, off_by_minor from cp.ledger_unbalanced").fetchall() == [(journal, 3)]
        _assert_exact(conn, "the unbalanced journal folded")
