"""`carrierpay demo --shards 2`: the demo over a front and two partitions (each its own cluster) passes
its checks on each partition and in total, with payments on both, each on the partition that owns its
number, and the front's merged ledger is the partitions' sum."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

from carrierpay.shards import local

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_over_two_partitions_checks_each_and_the_total():
    home = Path(tempfile.mkdtemp(prefix="carrierpay-demo-shards-",
                                 dir=os.environ.get("CARRIERPAY_TEST_TMPDIR", "/tmp")))
    os.chmod(home, 0o755)
    env = os.environ | {"PYTHONPATH": str(REPO), "CARRIERPAY_HOME": str(home), "CARRIERPAY_DATABASE_URL": "",
                        "COLUMNS": "250", "PYTHONIOENCODING": "utf-8"}
    try:
        run = subprocess.run([sys.executable, "-m", "carrierpay", "demo", "--shards", "2", "--subscribers", "200",
                              "--days", "1", "--seed", "7", "--summary", str(home / "summary.json")],
                             cwd=str(REPO), env=env, capture_output=True, text=True, timeout=400)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "all checks passed" in run.stdout
        summary = json.loads((home / "summary.json").read_text())
        checks = summary["checks"]
        assert summary["ok"] and all(check["ok"] for check in checks.values())
        for partition in (0, 1):
            for check in ("journals_balanced", "procedures_final_or_deferred", "carrier_ledgers_agree",
                          "webhooks_delivered", "history_shipped"):
                assert f"partition_{partition}_{check}" in checks
            rows = summary["partitions"][partition]
            assert sum(row["charges_collected"] for row in rows) > 0
            assert all(row["receivable_minor"] == row["simulator_charged_minor"] - row["simulator_refunded_minor"]
                       for row in rows)
        assert "carrier_ledgers_agree_in_total" in checks
        assert {row["country"] for row in summary["carriers"]} == {"GB", "ZA", "NG", "IN"}
        for row in summary["carriers"]:
            assert row["collected_minor"] == sum(r["collected_minor"] for rows in summary["partitions"]
                                                 for r in rows if r["carrier"] == row["carrier"])
        assert summary["http"]["payments_succeeded"] >= 1

        # The demo stopped its clusters; start them again and look at what they hold.
        front_url, shard_urls = local.up(home / "demo-shards", 2, say=lambda line: None, fast=True)
        receivable = ("select coalesce(sum(balance_minor), 0)::bigint from report.ledger_balances "
                      "where kind::text = 'carrier_receivable'")
        with psycopg.connect(front_url) as front:
            in_total = front.execute(receivable).fetchone()[0]
            owned = []
            for partition, url in enumerate(shard_urls):
                with psycopg.connect(url) as shard:
                    numbers = [n for (n,) in shard.execute("select msisdn from cp.subscriber")]
                    assert numbers and shard.execute(
                        "select count(*) from cp.procedure where kind = 'charge' and status = 'succeeded'"
                    ).fetchone()[0] > 0
                    owned.append(shard.execute(receivable).fetchone()[0])
                # Every subscriber a partition holds is one the front routes to it.
                assert {p for (p,) in front.execute(
                    "select distinct front.msisdn_hash(n) & 1 from unnest(%s::text[]) n", [numbers])} == {partition}
        assert in_total == sum(owned) > 0
    finally:
        local.down(home / "demo-shards")
        shutil.rmtree(home, ignore_errors=True)


def test_the_sharded_demo_refuses_what_it_cannot_do(tmp_path):
    import typer
    from click.testing import CliRunner

    from carrierpay.cli.main import app

    def run(*args: str):
        return CliRunner().invoke(typer.main.get_command(app), ["demo", *args], prog_name="carrierpay",
                                  env={"CARRIERPAY_HOME": str(tmp_path), "COLUMNS": "250",
                                       "CARRIERPAY_DATABASE_URL": ""})

    three = run("--shards", "3")
    assert three.exit_code == 1 and "power of two" in three.output
    kept = run("--shards", "2", "--keep")
    assert kept.exit_code == 1 and "without --keep" in kept.output
    assert not (tmp_path / "demo-shards").exists()  # refused before anything was started
