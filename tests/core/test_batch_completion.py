"""adapter.complete_calls settles the plain charge outcomes of a batch together (cp.settle_charges) and
the rest one by one. Whichever way a result goes, the outcome must be exactly what applying the
results one at a time (cp.apply_call_result, the reference) gives: same calls, procedures, ledger,
entitlements, subscriptions, notifications, receipts, events and hour statistics, and nothing twice.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.core.world import claim, load_world, pin_sent_to

NG_SUBSCRIBERS = [f"+23480200001{i:02d}" for i in range(6)]
GB_BUYERS = [f"+4477009000{i:02d}" for i in range(8)]

# What the state of the world is, without surrogate ids or wall-clock times (they differ between the
# two runs). Both runs happen at the same business time.
SNAPSHOT = {
    "calls": """select call_id, status::text, outcome, reason, carrier_code, carrier_ref, next_reconcile_at is null
                from cp.carrier_call where call_id <= %(last_call)s order by call_id""",
    "new_calls": """select case when procedure_id <= %(last_proc)s then procedure_id end, params->>'msisdn',
                           operation, attempt, status::text, params->>'purpose'
                    from cp.carrier_call where call_id > %(last_call)s order by 1, 2, 3""",
    "queue": "select call_id, available_at from cp.call_queue where call_id <= %(last_call)s "
             "order by 1",
    "procedures": """select procedure_id, kind::text, status::text, reason, collected_minor, amount_minor, variant
                     from cp.procedure where procedure_id <= %(last_proc)s order by 1""",
    "new_procedures": """select kind::text, subscriber_id, status::text, metadata->>'purpose' from cp.procedure
                         where procedure_id > %(last_proc)s order by 1, 2""",
    "ledger": """select j.procedure_id, j.kind, a.kind::text, a.carrier_id, a.merchant_id, a.country, e.amount_minor
                 from cp.journal j join cp.ledger_entry e using (journal_id)
                 join cp.ledger_account a using (account_id) order by 1, 3, 4, 5, 6""",
    "entitlements": """select procedure_id, variant, amount_minor, valid_until
                       from cp.entitlement order by 1""",
    "subscriptions": """select subscription_id, status::text, period_index, retry_level, cancel_reason,
                               paid_through, next_charge_at
                        from cp.subscription order by 1""",
    "notifications": """select kind, procedure_id, subscription_id, payload - 'created_at' - 'final_at'
                        from cp.merchant_notification order by 2, 3, 1""",
    "events": """select aggregate_type, aggregate_id, kind, payload from cp.event
                 where event_id > %(last_event)s
                   and aggregate_id <= case aggregate_type when 'carrier_call' then %(last_call)s
                                                           when 'procedure' then %(last_proc)s else aggregate_id end
                 order by 1, 2, event_id""",
    "new_events": """select aggregate_type, kind, (payload - 'procedure_id' - 'correlator')::text from cp.event
                     where event_id > %(last_event)s
                       and aggregate_id > case aggregate_type when 'carrier_call' then %(last_call)s
                                                              when 'procedure' then %(last_proc)s else aggregate_id end
                     order by 1, 2, 3""",
    "hour_stats": "select carrier_id, local_hour, sum(attempts), sum(successes) from cp.hour_stats_delta "
                  "group by 1, 2 order by 1, 2",
}


def snapshot(conn: psycopg.Connection, marks: dict) -> dict:
    return {name: conn.execute(sql, marks).fetchall() for name, sql in SNAPSHOT.items()}


def build_world(conn: psycopg.Connection) -> list[dict]:
    """Six NG subscribers past opt-in with their first charge leased, eight GB one-time charges leased."""
    load_world(conn)
    for msisdn in NG_SUBSCRIBERS:
        optin = conn.execute("select api.subscribe('acme', %s, 'club', 'daily', %s)",
                             [msisdn, f"s-{msisdn}"]).fetchone()[0]["optin_id"]
        conn.execute("select api.confirm_optin('acme', %s, %s)", [optin, pin_sent_to(conn, msisdn)])
    # One-time purchases without the GB opt-in (not what this is about); the GB receipts stay.
    conn.execute("update cp.carrier set rules_override = rules_override || '{\"optin_one_time\": false}' "
                 "where code = 'test_gb'")
    for i, msisdn in enumerate(GB_BUYERS):
        conn.execute("select api.charge('acme', %s, 'gems', %s)", [msisdn, f"order-{i}"])
    claim(conn, "test_ng")
    leased = claim(conn, "test_gb")
    return [c for c in leased if c["operation"] == "charge"]


def charge_calls(conn: psycopg.Connection, carrier: str) -> list[int]:
    return [r[0] for r in conn.execute(
        "select c.call_id from cp.carrier_call c join cp.carrier k using (carrier_id) "
        "where k.code = %s and c.operation = 'charge' and c.status = 'leased' order by c.call_id", [carrier])]


def mixed_results(ng: list[int], gb: list[int]) -> list[dict]:
    """Plain outcomes (settled together) and ones that need judgement (applied one by one)."""
    def result(call_id, outcome, reason=None, **extra):
        return {"call_id": call_id, "outcome": outcome, "reason": reason, "carrier_code": f"C-{call_id}",
                "carrier_ref": f"TX-{call_id}", "latency_ms": 120, **extra}

    return [
        # plain: subscription charges
        result(ng[0], "succeeded"),
        result(ng[1], "failed", "insufficient_funds"),
        result(ng[2], "failed", "insufficient_funds"),
        result(ng[3], "failed", "barred"),
        result(ng[4], "succeeded", amount_minor=10000),
        # needs judgement: a transient failure (a new attempt), a throttle (back on the queue)
        result(ng[5], "failed", "transient"),
        # plain: one-time charges (GB regulation sends a receipt after each charge)
        result(gb[0], "succeeded"),
        result(gb[1], "failed", "rejected"),
        # needs judgement: unknown, a different amount charged, throttled, pending, the same call twice
        result(gb[2], "unknown", "timeout"),
        result(gb[3], "succeeded", amount_minor=1),
        result(gb[4], "failed", "throttled", retry_after_s=30),
        result(gb[5], "pending"),
        result(gb[6], "succeeded"),
        result(gb[6], "succeeded"),
        result(gb[7], "succeeded"),
        result(gb[7], "failed", "rejected"),
    ]


def apply_one_by_one(conn: psycopg.Connection, results: list[dict]) -> None:
    for r in sorted(results, key=lambda r: r["call_id"]):
        conn.execute("select cp.apply_call_result(%s, %s)", [r["call_id"], json.dumps(r)])


def test_a_mixed_batch_ends_exactly_as_one_result_at_a_time(conn):
    build_world(conn)
    ng, gb = charge_calls(conn, "test_ng"), charge_calls(conn, "test_gb")
    assert (len(ng), len(gb)) == (6, 8)
    results = mixed_results(ng, gb)
    marks = dict(zip(("last_call", "last_proc", "last_event"), conn.execute(
        "select (select max(call_id) from cp.carrier_call), (select max(procedure_id) from cp.procedure), "
        "(select max(event_id) from cp.event)").fetchone(), strict=True))

    now = conn.execute("select cp.clock_now()").fetchone()[0]
    logged_before = conn.execute("select count(*) from cp.carrier_log").fetchone()[0]  # the PIN SMS sent
    conn.execute("begin")
    conn.execute("select admin.set_clock(%s)", [now])
    apply_one_by_one(conn, results)
    reference = snapshot(conn, marks)
    conn.execute("rollback")

    conn.execute("begin")
    conn.execute("select admin.set_clock(%s)", [now])
    summary = conn.execute("select adapter.complete_calls(%s)", [json.dumps(results)]).fetchone()[0]
    batched = snapshot(conn, marks)
    logged = conn.execute("select count(*) from cp.carrier_log").fetchone()[0]
    conn.execute("commit")

    for name in SNAPSHOT:
        assert batched[name] == reference[name], name
    assert summary == {"applied": 14, "duplicate": 1, "conflict": 1}
    assert logged - logged_before == len(results)

    # And the outcome is the right one, not only the same one.
    status = dict(conn.execute("select call_id, status::text from cp.carrier_call").fetchall())
    assert [status[c] for c in ng] == ["done", "failed", "failed", "failed", "done", "failed"]
    assert [status[c] for c in gb] == ["done", "failed", "unknown", "done", "queued", "awaiting_result",
                                       "done", "done"]
    subs = dict(conn.execute("select s.status::text, count(*) from cp.subscription s group by 1").fetchall())
    assert subs == {"active": 3, "retrying": 2, "cancelled": 1}  # the transient one keeps its charge going
    unbalanced = conn.execute("select count(*) from (select journal_id from cp.ledger_entry group by 1 "
                              "having sum(amount_minor) <> 0) j").fetchone()[0]
    assert unbalanced == 0
    journals = conn.execute("select count(*) from cp.journal where kind = 'charge'").fetchone()[0]
    assert journals == 6  # ng 0, ng 4, gb 0, gb 3, gb 6, gb 7: one each, however often reported
    receipts = conn.execute("select count(*) from cp.procedure where kind = 'sms' "
                            "and metadata->>'purpose' = 'receipt'").fetchone()[0]
    assert receipts == 4  # one per GB charge collected


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_a_batch_answered_twice_changes_nothing_the_second_time(conn, outcome):
    build_world(conn)
    calls = charge_calls(conn, "test_gb")
    results = [{"call_id": c, "outcome": outcome, "reason": None if outcome == "succeeded" else "rejected"}
               for c in calls]
    first = conn.execute("select adapter.complete_calls(%s)", [json.dumps(results)]).fetchone()[0]
    counts = "select (select count(*) from cp.journal), (select count(*) from cp.entitlement), " \
             "(select count(*) from cp.merchant_notification), (select count(*) from cp.procedure)"
    before = conn.execute(counts).fetchone()
    second = conn.execute("select adapter.complete_calls(%s)", [json.dumps(results)]).fetchone()[0]
    assert first == {"applied": len(calls)}
    assert second == {"duplicate": len(calls)}
    assert conn.execute(counts).fetchone() == before
