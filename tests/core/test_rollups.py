"""The hourly rollups count every settled carrier call exactly once: calls settled between folds,
calls the watermark passed while unsettled (unknown, then reconciled), and a call whose transaction
was still open when a later one was folded. report.revenue (read from the rollup) then equals the
payments themselves."""

from __future__ import annotations

import psycopg

from tests.core.test_scheduling import field, last_charge, run_due, subscribe
from tests.core.world import load_world


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


# Direct counts over the payment tables: what the report views meant when they scanned them.
_DIRECT = {
    "success_by_carrier": """
        select c.code, c.country, count(*) filter (where p.status <> 'pending'),
               count(*) filter (where p.status in ('succeeded', 'partially_refunded', 'refunded')),
               count(*) filter (where p.status = 'failed'), count(*) filter (where p.status in ('in_flight', 'unknown'))
        from cp.procedure p join cp.carrier c using (carrier_id) where p.kind = 'charge'
        group by c.code, c.country order by 1""",
    "retries_per_success": """
        select c.code, count(*), count(*) filter (where p.status in ('succeeded', 'partially_refunded', 'refunded'))
        from cp.procedure p join cp.carrier c using (carrier_id)
        where p.kind = 'charge' and p.subscription_id is not null group by c.code order by 1""",
    "refunds": """
        select c.code, m.code, r.currency, count(*), count(*) filter (where r.status = 'succeeded'),
               count(*) filter (where r.status = 'failed'),
               coalesce(sum(r.amount_minor) filter (where r.status = 'succeeded'), 0)::bigint
        from cp.procedure r join cp.carrier c using (carrier_id) join cp.merchant m using (merchant_id)
        where r.kind = 'refund' group by c.code, m.code, r.currency order by 1, 2""",
    "carrier_summary": """
        select k.code, count(p.*) filter (where p.status <> 'pending' and p.kind = 'charge'),
               count(p.*) filter (where p.status in ('succeeded', 'partially_refunded', 'refunded')
                                  and p.kind = 'charge'),
               count(p.*) filter (where p.status = 'failed' and p.kind = 'charge'),
               coalesce(sum(p.collected_minor) filter (where p.kind = 'charge'), 0)::bigint,
               coalesce(sum(p.refunded_minor) filter (where p.kind = 'charge'), 0)::bigint,
               count(p.*) filter (where p.kind = 'refund'),
               count(p.*) filter (where p.kind = 'refund' and p.status = 'succeeded'),
               count(p.*) filter (where p.kind = 'charge' and p.period_index >= 1 and p.subscription_id is not null
                                  and p.status in ('succeeded', 'partially_refunded', 'refunded', 'failed')),
               count(p.*) filter (where p.kind = 'charge' and p.period_index >= 1 and p.subscription_id is not null
                                  and p.status in ('succeeded', 'partially_refunded', 'refunded'))
        from cp.carrier k left join cp.procedure p on p.carrier_id = k.carrier_id group by k.code order by 1""",
    "churn": """
        select c.code, m.code, count(*), count(*) filter (where s.status = 'active'),
               count(*) filter (where s.status in ('retrying', 'grace')),
               count(*) filter (where s.status = 'suspended'),
               count(*) filter (where s.status = 'cancelled'), count(*) filter (where s.cancel_reason = 'unpaid'),
               count(*) filter (where s.status = 'pending_optin')
        from cp.subscription s join cp.carrier c using (carrier_id) join cp.merchant m using (merchant_id)
        group by c.code, m.code order by 1, 2""",
    "open_calls": """
        select c.code, k.operation, k.status::text, count(*), min(k.created_at), max(k.reconcile_attempts)
        from cp.carrier_call k join cp.carrier c using (carrier_id)
        where k.status in ('queued', 'leased', 'awaiting_result', 'unknown')
        group by c.code, k.operation, k.status order by 1, 2, 3""",
    "calls_needing_operator": """
        select c.call_id, c.status::text, c.reconcile_attempts
        from cp.carrier_call c join cp.carrier k using (carrier_id)
        where c.status in ('unknown', 'awaiting_result') and c.reconcile_attempts >= cp.operator_after_turns(k.spec)
        order by 1""",
}

_FROM_VIEWS = {
    "success_by_carrier": "select carrier, country, attempts, succeeded, failed, open "
                          "from report.success_by_carrier order by 1",
    "retries_per_success": "select carrier, renewal_attempts, renewals_collected "
                           "from report.retries_per_success order by 1",
    "refunds": "select carrier, merchant, currency, refunds, succeeded, failed, refunded_minor "
               "from report.refunds order by 1, 2",
    "carrier_summary": "select carrier, charges_attempted, charges_collected, charges_failed, collected_minor, "
                       "refunded_minor, refunds, refunds_succeeded, renewal_attempts, renewals_collected "
                       "from report.carrier_summary order by 1",
    "churn": "select carrier, merchant, subscriptions, active, in_retry_or_grace, suspended, cancelled, "
             "cancelled_unpaid, pending_optin from report.churn order by 1, 2",
    "open_calls": "select carrier, operation, status::text, calls, oldest, max_reconcile_attempts "
                  "from report.open_calls order by 1, 2, 3",
    "calls_needing_operator": "select call_id, status::text, reconcile_attempts "
                              "from report.calls_needing_operator order by 1",
}


def test_payment_reports_read_from_the_rollup_equal_direct_counts(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        load_world(conn)
        renewed = [subscribe(conn, "+2348029990001", key="s-a"), subscribe(conn, "+2348029990002", key="s-b")]
        cancelled = subscribe(conn, "+2348029990003", key="s-c")
        conn.execute("select api.cancel_subscription('acme', %s)", [cancelled])
        conn.execute("select api.subscribe('acme', '+2348029990004', 'club', 'daily', 's-d')")  # awaits its opt-in
        # Subscriptions are counted at once, before a fold moves what changed into the counts.
        assert conn.execute(_FROM_VIEWS["churn"]).fetchall() == conn.execute(_DIRECT["churn"]).fetchall()
        assert conn.execute("select count(*) from cp.subscription_count_delta").fetchone()[0] > 0
        conn.execute("select admin.set_clock(%s)", [max(field(conn, s, "next_charge_at") for s in renewed)])
        conn.execute("select admin.advance_clock('1 minute')")
        assert run_due(conn) == 2
        _claim_and_settle(conn, {last_charge(conn, renewed[0])["procedure_id"]: "succeeded",
                                 last_charge(conn, renewed[1])["procedure_id"]: "failed"})
        outcomes = ["succeeded", "failed", "unknown", "succeeded", "succeeded", "failed"]
        charges = {_charge(conn, n): outcome for n, outcome in enumerate(outcomes)}
        charges[_charge(conn, 10, "other", "coins")] = "succeeded"
        _claim_and_settle(conn, charges)
        paid = [p for p, outcome in charges.items() if outcome == "succeeded"]
        refunds = [conn.execute("select (api.refund('acme', %s, %s)->>'id')::bigint", [p, f"rf-{p}"]).fetchone()[0]
                   for p in paid[:3]]
        _claim_and_settle(conn, {refunds[0]: "succeeded", refunds[1]: "failed"})  # the third stays open
        _charge(conn, 30)  # queued, not sent: pending
        awaiting = _charge(conn, 32)
        _claim_and_settle(conn, {awaiting: "pending"})  # sent, its result to come by callback
        stuck = _charge(conn, 33)
        _claim_and_settle(conn, {stuck: "unknown"})
        # Quiet for longer than the carrier's timeout, then three reconciliation turns with no answer:
        # the operator's.
        conn.execute("update cp.carrier_call set sent_at = clock_timestamp() - interval '1 hour' "
                     "where procedure_id = %s", [stuck])
        for _ in range(3):
            conn.execute("update cp.carrier_call set next_reconcile_at = cp.clock_now() where procedure_id = %s",
                         [stuck])
            conn.execute("select count(*) from adapter.claim_reconciliations('test_ng', 10)")
        assert conn.execute("select count(*) from report.calls_needing_operator").fetchone()[0] == 1
        conn.execute("select admin.advance_clock('3 minutes')")
        conn.execute("select sched.fold_rollups()")
        in_flight = _charge(conn, 31)
        conn.execute("select adapter.claim_calls('test_ng', 1000, interval '1 hour', 'rollup-test')")
        assert conn.execute("select status from cp.procedure where procedure_id = %s",
                            [in_flight]).fetchone()[0] == "in_flight"
        conn.execute("select sched.fold_rollups()")

        for view, direct in _DIRECT.items():
            assert conn.execute(_FROM_VIEWS[view]).fetchall() == conn.execute(direct).fetchall(), view
        summary = conn.execute(_FROM_VIEWS["carrier_summary"]).fetchall()
        assert any(row[6] == 3 and row[7] == 1 and row[8] == 2 and row[9] == 1 for row in summary)

        # Final payments are read from the rollup: one settled after the last fold shows at the next.
        before = conn.execute("select succeeded from report.success_by_carrier where carrier = 'test_ng'").fetchone()
        _claim_and_settle(conn, {in_flight: "succeeded"})
        assert conn.execute("select succeeded from report.success_by_carrier "
                            "where carrier = 'test_ng'").fetchone() == before
        conn.execute("select sched.fold_rollups()")
        assert conn.execute("select succeeded from report.success_by_carrier "
                            "where carrier = 'test_ng'").fetchone() == (before[0] + 1,)

        # Settling the unknown charge later (reconciled) moves it from open to collected once.
        unknown = next(p for p, outcome in charges.items() if outcome == "unknown")
        conn.execute("select pg_temp.settle(%s, 'succeeded')", [unknown])
        for _ in range(2):
            conn.execute("select sched.fold_rollups()")
        for view, direct in _DIRECT.items():
            assert conn.execute(_FROM_VIEWS[view]).fetchall() == conn.execute(direct).fetchall(), view


def _scans(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _scans(child)


def test_payment_reports_read_no_payment_table_whole(db_url):
    """Forced off sequential scans, a view that must count every payment still walks a whole index;
    these views look up the payment tables only by key or through the partial index of open calls."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        load_world(conn)
        conn.execute("set enable_seqscan = off")
        for view in _FROM_VIEWS:
            plan = conn.execute(f"explain (format json) select * from report.{view}").fetchone()[0][0]["Plan"]
            for node in _scans(plan):
                if node.get("Relation Name") in ("procedure", "carrier_call", "subscription"):
                    keyed = "Index Cond" in node or "Recheck Cond" in node  # a bitmap scan checks its own
                    assert keyed or node.get("Index Name") == "carrier_call_to_reconcile", (view, node)


def test_old_stragglers_are_rechecked_on_a_slower_cadence_than_new_calls(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        load_world(conn)
        unknown = _charge(conn, 1)
        _claim_and_settle(conn, {unknown: "unknown"})
        conn.execute("select admin.advance_clock('3 minutes')")
        conn.execute("select sched.fold_rollups()")  # passes the unknown call: a straggler
        conn.execute("select admin.advance_clock('2 minutes')")
        conn.execute("select sched.fold_rollups()")  # the full re-check: still unknown
        conn.execute("select pg_temp.settle(%s, 'succeeded')", [unknown])  # reconciled
        fresh = _charge(conn, 2)
        _claim_and_settle(conn, {fresh: "succeeded"})
        conn.execute("select sched.fold_rollups(50000, interval '0 seconds')")
        # New calls are folded at once; the old straggler waits for the next full re-check.
        assert _folded_calls(conn) == 1
        assert conn.execute("select stragglers from report.rollup_progress").fetchone()[0] == 1
        conn.execute("select admin.advance_clock('1 minute')")
        conn.execute("select sched.fold_rollups()")
        assert _folded_calls(conn) == _settled_calls(conn) == 2
        assert conn.execute("select stragglers from report.rollup_progress").fetchone()[0] == 0
