"""The operator CLI groups as subprocesses against a real database, with their error cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def document(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_onboard_a_merchant_sell_and_refund_from_the_command_line(cli, conn):
    conn.execute("select admin.onboard_carrier(%s::jsonb)", [json.dumps({
        "code": "cli_ng", "name": "CLI NG", "country": "NG", "mcc": "621", "mnc": "30", "currency": "NGN",
        "timezone": "Africa/Lagos", "number_ranges": ["+234803"], "regulation": "NG",
        "operations": {"charge": {"pattern": "sync"}, "refund": {"pattern": "sync"}, "send_sms": {"pattern": "sync"}},
    })])
    refused = cli("merchant", "add", "shop", "Shop Ltd", "--webhook-url", "http://shop.example/h")
    assert refused.returncode == 1 and "CP064" in refused.stderr  # plain http needs --allow-http
    added = document(cli("merchant", "add", "shop", "Shop Ltd", "--webhook-url", "https://shop.example/h"))
    assert added["status"] == "created" and len(added["webhook_secret"]) == 64
    assert "shop" in cli("merchant", "list").stdout
    rotated = document(cli("merchant", "rotate-secret", "shop"))
    assert rotated["webhook_secret"] != added["webhook_secret"]

    assert document(cli("product", "add", "shop", "gold", "Gold pack"))["status"] == "saved"
    assert document(cli("product", "price", "shop", "gold", "one_time", "15000", "NGN", "gold_1",
                        "--carrier", "cli_ng"))["amount_minor"] == 15000
    assert "gold_1" in cli("product", "prices", "shop").stdout

    charge = document(cli("pay", "charge", "shop", "+2348030000001", "gold", "--key", "order-1"))
    assert charge["status"] == "pending" and charge["amount_minor"] == 15000
    again = document(cli("pay", "charge", "shop", "+2348030000001", "gold", "--key", "order-1"))
    assert again["id"] == charge["id"]

    # An adapter settles it; then the refund goes through the CLI.
    conn.execute("select adapter.claim_calls('cli_ng', 10, interval '1 minute', 't')")
    call_id = conn.execute("select call_id from cp.carrier_call where procedure_id = %s", [charge["id"]]).fetchone()[0]
    conn.execute("select adapter.complete_calls(%s::jsonb)",
                 [json.dumps([{"call_id": call_id, "outcome": "succeeded"}])])
    shown = document(cli("pay", "show", "shop", str(charge["id"])))
    assert shown["status"] == "succeeded" and shown["attempts"][0]["outcome"] == "succeeded"
    refund = document(cli("pay", "refund", "shop", str(charge["id"]), "--amount", "5000"))
    assert refund["kind"] == "refund" and refund["amount_minor"] == 5000

    subscriber = cli("subscriber", "show", "+2348030000001")
    assert subscriber.returncode == 0 and "cli_ng" in subscriber.stdout
    history = cli("subscriber", "history", "+2348030000001")
    assert "charge" in history.stdout and "refund" in history.stdout

    conn.execute("select sched.fold_rollups()")  # the scheduler's tick: report.revenue reads the rollup
    revenue = cli("report", "revenue", "--format", "json")
    rows = json.loads(revenue.stdout)
    assert rows == [{"carrier": "cli_ng", "country": "NG", "merchant": "shop", "currency": "NGN", "payments": 1,
                     "collected_minor": 15000, "refunded_minor": 0, "net_minor": 15000}]
    csv_out = cli("report", "calls", "--format", "csv")
    assert csv_out.returncode == 0 and csv_out.stdout.startswith("carrier,operation,status")


def test_an_operator_lists_the_calls_no_route_settled_and_settles_one(cli, conn):
    conn.execute("select admin.onboard_carrier(%s::jsonb)", [json.dumps({
        "code": "cli_ng", "name": "CLI NG", "country": "NG", "mcc": "621", "mnc": "30", "currency": "NGN",
        "timezone": "Africa/Lagos", "number_ranges": ["+234803"], "regulation": "NG",
        "operations": {"charge": {"pattern": "sync"}, "refund": {"pattern": "sync"}},
    })])
    conn.execute("select admin.add_merchant('shop', 'Shop Ltd', null, 0)")
    conn.execute("select admin.add_product('shop', 'gold', 'Gold pack')")
    conn.execute("select admin.add_price_point('shop', 'gold', 'one_time', 5000, 'NGN', 'gold_1', 'cli_ng')")
    payment = conn.execute("select api.charge('shop', '+2348030000001', 'gold', 'k1')").fetchone()[0]["id"]
    conn.execute("select adapter.claim_calls('cli_ng', 10, interval '1 minute', 't')")
    conn.execute("select adapter.complete_calls(jsonb_build_array(jsonb_build_object("
                 "'call_id', (select call_id from cp.carrier_call where procedure_id = %s), 'outcome', 'succeeded')))",
                 [payment])
    refund = conn.execute("select api.refund('shop', %s, 'r1')", [payment]).fetchone()[0]["id"]
    conn.execute("select adapter.claim_calls('cli_ng', 10, interval '1 minute', 't')")
    conn.execute("select admin.advance_clock(interval '2 minutes')")
    conn.execute("select adapter.expire_leases()")  # the adapter died: the refund's outcome is unknown
    assert json.loads(cli("calls", "unsettled", "--format", "json").stdout) == []
    for _ in range(3):  # three reconciliation turns, none of which could settle it
        conn.execute("select admin.advance_clock(interval '1 day')")
        conn.execute("update cp.carrier_call set sent_at = sent_at - interval '1 hour'")
        conn.execute("select adapter.claim_reconciliations('cli_ng', 10)")

    listed = json.loads(cli("calls", "unsettled", "--format", "json").stdout)
    assert [(row["procedure_id"], row["operation"], row["status"], row["amount_minor"]) for row in listed] == [
        (refund, "refund", "unknown", 5000)]
    assert "refund" in cli("report", "operator").stdout
    call_id = str(listed[0]["call_id"])
    settled = document(cli("calls", "settle", call_id, "succeeded", "--reason", "carrier portal: refund done"))
    assert (settled["status"], settled["procedure_status"]) == ("done", "succeeded")
    assert json.loads(cli("calls", "unsettled", "--format", "json").stdout) == []
    again = cli("calls", "settle", call_id, "failed", "--reason", "changed my mind")
    assert again.returncode != 0 and "CP091" in again.stderr and "Traceback" not in again.stderr
    no_reason = cli("calls", "settle", call_id, "failed")
    assert no_reason.returncode != 0 and "--reason" in no_reason.stderr


def test_user_errors_are_one_line_with_a_code_and_no_traceback(cli):
    cases = [
        (("pay", "charge", "nobody", "+2348030000001", "gold"), "CP001"),
        (("merchant", "add", "Bad Code", "x"), "CP080"),
        (("product", "add", "ghost", "p", "P"), "CP001"),
        (("pay", "show", "nobody", "1"), "CP001"),
        (("report", "nonsense"), "unknown report"),
        (("report", "revenue", "--format", "xml"), "unknown format"),
        (("subscriber", "show", "+999"), "no subscriber"),
    ]
    for args, expected in cases:
        result = cli(*args)
        assert result.returncode != 0, args
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr, args


def test_every_group_explains_itself():
    for group in ("db", "merchant", "product", "subscriber", "pay", "webhooks", "history", "report", "calls"):
        result = subprocess.run([sys.executable, "-m", "carrierpay", group, "--help"], capture_output=True,
                                text=True, env=os.environ | {"COLUMNS": "200"})
        assert result.returncode == 0 and "Usage" in result.stdout, group


def test_a_database_without_the_schema_gets_one_line_and_the_migrate_hint(empty_db_url):
    env = os.environ | {"CARRIERPAY_DATABASE_URL": empty_db_url, "COLUMNS": "250"}
    result = subprocess.run([sys.executable, "-m", "carrierpay", "report", "carriers"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "carrierpay db migrate" in result.stderr


def test_reconcile_pending_and_resolve_settle_a_call_no_route_could(cli, conn):
    """A charge on a carrier with neither a status query nor a result file: after its turns it is in the
    operator queue, and `reconcile resolve` settles it from the carrier's word, with an audit event."""
    conn.execute("select admin.onboard_carrier(%s::jsonb)", [json.dumps({
        "code": "quiet_ng", "name": "Quiet NG", "country": "NG", "mcc": "621", "mnc": "40", "currency": "NGN",
        "timezone": "Africa/Lagos", "number_ranges": ["+234804"], "regulation": "NG",
        "operations": {"charge": {"pattern": "sync"}}, "reconciliation": {"operator_after_turns": 2},
    })])
    conn.execute("select admin.add_merchant('shop', 'Shop Ltd', null, 0)")
    conn.execute("select admin.add_product('shop', 'gold', 'Gold pack')")
    conn.execute("select admin.add_price_point('shop', 'gold', 'one_time', 15000, 'NGN', 'gold_1', 'quiet_ng')")
    payment = conn.execute("select api.charge('shop', '+2348040000001', 'gold', 'o-1')").fetchone()[0]["id"]
    conn.execute("select adapter.claim_calls('quiet_ng', 10, interval '1 minute', 't')")
    call_id = conn.execute("select call_id from cp.carrier_call where procedure_id = %s", [payment]).fetchone()[0]
    conn.execute("select adapter.complete_calls(%s::jsonb)",
                 [json.dumps([{"call_id": call_id, "outcome": "unknown"}])])
    assert json.loads(cli("reconcile", "pending", "--format", "json").stdout) == []
    conn.execute("update cp.carrier_call set reconcile_attempts = 2 where call_id = %s", [call_id])

    pending = json.loads(cli("reconcile", "pending", "--format", "json").stdout)
    assert [(row["call_id"], row["carrier"], row["operation"]) for row in pending] == [(call_id, "quiet_ng", "charge")]
    refused = cli("reconcile", "resolve", str(call_id), "maybe", "--evidence", "carrier hotline")
    assert refused.returncode == 1 and "CP080" in refused.stderr
    resolved = document(cli("reconcile", "resolve", str(call_id), "failed",
                            "--evidence", "carrier hotline: not charged"))
    assert (resolved["status"], resolved["procedure_status"]) == ("failed", "failed")
    assert conn.execute("select payload->>'reason', payload->>'outcome' from cp.event "
                        "where kind = 'settled_by_operator' and aggregate_id = %s",
                        [call_id]).fetchone() == ("carrier hotline: not charged", "failed")
    assert json.loads(cli("reconcile", "pending", "--format", "json").stdout) == []
    again = cli("reconcile", "resolve", str(call_id), "succeeded", "--evidence", "changed my mind")
    assert again.returncode == 1 and "CP091" in again.stderr
