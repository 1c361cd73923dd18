"""`carrierpay demo` end to end, as a user runs it: a fresh CARRIERPAY_HOME, a small population over two
simulated days. Its checks must pass, and what it reports must be what the database holds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from tests.e2e.as_a_user import run_carrierpay


def carrierpay(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return run_carrierpay(home, *args, home=home, timeout=timeout)


@pytest.fixture
def home():
    path = Path(tempfile.mkdtemp(prefix="carrierpay-demo-", dir="/tmp"))
    os.chmod(path, 0o755)  # the postgres user must reach it when we are root
    try:
        yield path
    finally:
        carrierpay(path, "db", "down")
        shutil.rmtree(path, ignore_errors=True)


def test_demo_runs_its_checks_and_reports_what_the_database_holds(home):
    summary_path = home / "summary.json"
    run = carrierpay(home, "demo", "--subscribers", "500", "--days", "2", "--seed", "7",
                     "--summary", str(summary_path), timeout=280)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "all checks passed" in run.stdout
    summary = json.loads(summary_path.read_text())
    assert summary["ok"] is True
    assert {name for name, check in summary["checks"].items() if not check["ok"]} == set()
    assert {row["country"] for row in summary["carriers"]} == {"GB", "ZA", "NG", "IN"}
    # One merchant integrates over the HTTP API: tokens, subscriptions, CAMARA payments with a sink.
    http = summary["http"]
    assert http["merchant"] == "pixelforge" and http["tokens"] >= 1
    assert http["payments_succeeded"] >= 1
    assert http["sink_notifications"].get("payment-completed", 0) >= 1
    assert "pixelforge over the HTTP API" in run.stdout

    # Without --keep the demo stops the cluster it started; its data stays. Look at it.
    assert carrierpay(home, "db", "up").returncode == 0
    url = carrierpay(home, "db", "url", "--database", "carrierpay_demo").stdout.strip()
    assert url.endswith("/carrierpay_demo")
    with psycopg.connect(url) as conn:
        cur = conn.execute("select * from report.carrier_summary order by country, carrier")
        columns = [c.name for c in cur.description]
        in_database = {row[0]: dict(zip(columns, row, strict=True)) for row in cur.fetchall()}
        reported = {row["carrier"]: row for row in summary["carriers"]}
        assert set(in_database) == set(reported)
        for carrier, row in in_database.items():
            for column, value in row.items():
                expected = reported[carrier][column]
                assert (str(value) if value is not None else None) == (str(expected) if expected is not None
                                                                         else None), (carrier, column)
            # our ledger agrees with the carrier's own (the simulator's, as the demo saw it)
            assert reported[carrier]["receivable_minor"] == \
                reported[carrier]["simulator_charged_minor"] - reported[carrier]["simulator_refunded_minor"]
        assert conn.execute("select count(*) from report.unbalanced_journals").fetchone()[0] == 0
        # What the HTTP merchant was told at its sink is what the database settled and delivered.
        succeeded_over_http = conn.execute(
            "select count(*) from cp.procedure p join cp.notification_sink s on s.procedure_id = p.procedure_id "
            "join cp.merchant m on m.merchant_id = p.merchant_id where m.code = 'pixelforge' and p.kind = 'charge' "
            "and p.status in ('succeeded', 'partially_refunded', 'refunded')").fetchone()[0]
        assert succeeded_over_http == http["payments_succeeded"] >= 1
        delivered_to_sink = conn.execute("select count(*) from cp.merchant_notification where to_sink "
                                         "and status = 'delivered'").fetchone()[0]
        assert delivered_to_sink == sum(http["sink_notifications"].values()) >= 1
        sql_merchant_clients = conn.execute("select count(*) from cp.api_client c join cp.merchant m "
                                            "using (merchant_id) where m.code = 'tunebox'").fetchone()[0]
        assert sql_merchant_clients == 0  # the other merchant stays on SQL
        subscriptions = conn.execute("select count(*) from cp.subscription").fetchone()[0]
        assert subscriptions == summary["totals"]["subscriptions"] == 500
        collected = conn.execute("select count(*) from cp.procedure where kind = 'charge' "
                                 "and status in ('succeeded', 'partially_refunded', 'refunded')").fetchone()[0]
        assert collected == summary["totals"]["charges_collected"] > 0
        renewals = sum(row["renewals_collected"] for row in in_database.values())
        assert renewals > 0  # two days: the daily plan renewed
        receivable = dict(conn.execute(
            "select owner, balance_minor from report.ledger_balances where kind = 'carrier_receivable'").fetchall())
        for carrier, row in reported.items():
            assert receivable.get(carrier, 0) == row["receivable_minor"]
