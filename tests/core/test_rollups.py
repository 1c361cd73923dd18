"""The hourly rollups count every settled carrier call exactly once: calls settled between folds,
calls the watermark passed while unsettled (unknown, then reconciled), and a call whose transaction
was still open when a later one was folded. report.revenue (read from the rollup) then equals the
payments themselves."""

from __future__ import annotations

import psycopg

from tests.core.conftest import load_world


def _charge(conn, n: int, merchant: str = "acme", product: str = "gems") -> int:
    return conn.execute("select (api.charge(%s, %s, %s, %s)->>'id')::bigint",
                        [merchant, f"+234802{n:07d}", product, f"r{n}"]).fetchone()[0]


def _claim_and_settle(conn, outcomes: dict[int, str]) -> None:
    conn.execute("select adapter.claim_calls('test_ng', 1000, interval '1 hour', 'rollup-test')")
    for procedure_id, outcome in outcomes.items():
        conn.execute("select pg_temp.settle(%s, %s, %s)",
                     [procedure_id, outcome, "insufficient_funds" if outcome == "failed" else None])


def _settled_calls(conn) -> int:
    return conn.execute("select count(*) from cp.carrier_call where status in ('done', 'failed')").fetchone()[0]


def _folded_calls(conn) -> int:
    return conn.execute("select coalesce(sum(calls), 0) from cp.rollup_hour").fetchone()[0]


def test_every_settled_call_is_folded_once_and_revenue_equals_the_payments(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn, psycopg.connect(db_url) as late:
        load_world(conn)
        outcomes = ["succeeded", "failed", "unknown", "succeeded"]
        first = {_charge(conn, n): outcome for n, outcome in enumerate(outcomes)}
        first[_charge(conn, 10, "other", "coins")] = "succeeded"
        _claim_and_settle(conn, first)
        conn.execute("select sched.fold_rollups()")
        # A charge whose transaction is still open while a later one settles and is folded.
        held = _charge(late, 20)
        after = _charge(conn, 21)
        _claim_and_settle(conn, {after: "succeeded"})
        conn.execute("select admin.advance_clock('3 minutes')")  # the unknown call is passed, as a straggler
        conn.execute("select sched.fold_rollups()")
        late.commit()
        _claim_and_settle(conn, {held: "succeeded"})
        paid = [p for p, outcome in first.items() if outcome == "succeeded"]
        refund = conn.execute("select (api.refund('acme', %s, 'rf-1')->>'id')::bigint", [paid[0]]).fetchone()[0]
        _claim_and_settle(conn, {refund: "succeeded"})
        unknown = next(p for p, outcome in first.items() if outcome == "unknown")
        conn.execute("select pg_temp.settle(%s, 'succeeded')", [unknown])  # reconciled
        for _ in range(3):
            conn.execute("select sched.fold_rollups()")

        assert _folded_calls(conn) == _settled_calls(conn) == 8
        assert conn.execute("select count(*) from cp.rollup_straggler").fetchone()[0] == 0
        from_rollup = conn.execute(
            "select merchant, currency, payments, collected_minor, refunded_minor, net_minor "
            "from report.revenue order by merchant").fetchall()
        from_payments = conn.execute("""
            select m.code, p.currency,
                   count(*) filter (where p.collected_minor > 0), sum(p.collected_minor)::bigint,
                   sum(p.refunded_minor)::bigint, sum(p.collected_minor - p.refunded_minor)::bigint
            from cp.procedure p join cp.merchant m using (merchant_id)
            where p.kind = 'charge' group by m.code, p.currency order by m.code""").fetchall()
        assert from_rollup == from_payments
        assert from_payments[0][4] > 0  # the refund is in it
        hourly = conn.execute("select sum(attempts), sum(succeeded) from report.hourly_success "
                              "where carrier = 'test_ng'").fetchone()
        assert hourly == (7, 6)
