"""Pausing and resuming a carrier, a merchant or a product, and a carrier's breaker thresholds, from the CLI."""

from __future__ import annotations

import json

from tests.core.world import load_world


def _claimable(conn, carrier: str) -> int:
    return len(conn.execute("select adapter.claim_calls(%s, 100, interval '1 minute', 'cli-test')", [carrier])
               .fetchall())


def test_pause_and_resume_hold_and_release_calls(cli, conn):
    load_world(conn)
    conn.execute("select api.charge('acme', '+2348020000001', 'gems', 'c1')")
    paused = cli("product", "pause", "acme", "gems", "--reason", "price check")
    assert paused.returncode == 0, paused.stderr
    assert "product acme/gems: sending paused" in paused.stdout
    assert _claimable(conn, "test_ng") == 0
    rows = conn.execute("select scope, target, reason from report.sending_pauses").fetchall()
    assert rows == [("product", "acme/gems", "price check")]
    assert "sending resumed" in cli("product", "resume", "acme", "gems").stdout
    assert _claimable(conn, "test_ng") == 1

    conn.execute("select api.charge('acme', '+2348020000002', 'gems', 'c2')")
    assert cli("merchant", "pause", "acme").returncode == 0
    assert _claimable(conn, "test_ng") == 0
    assert "already" in cli("merchant", "pause", "acme").stdout
    assert cli("merchant", "resume", "acme").returncode == 0
    assert cli("carrier", "pause", "test_ng").returncode == 0
    assert _claimable(conn, "test_ng") == 0
    assert "was not paused" in cli("carrier", "resume", "test_gb").stdout
    assert cli("carrier", "resume", "test_ng").returncode == 0
    assert _claimable(conn, "test_ng") == 1

    unknown = cli("merchant", "pause", "nobody")
    assert unknown.returncode == 1 and "CP130" in unknown.stderr and "Traceback" not in unknown.stderr


def test_breaker_thresholds_are_set_and_shown(cli, conn):
    load_world(conn)
    shown = cli("carrier", "breaker", "test_ng", "--error-pct", "40", "--min-calls", "10", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    [row] = json.loads(shown.stdout)
    assert (row["state"], row["error_pct"], row["min_calls"], row["window_s"]) == ("closed", 40, 10, 60)
    refused = cli("carrier", "breaker", "test_ng", "--error-pct", "0")
    assert refused.returncode == 1 and "CP131" in refused.stderr
    assert {r["carrier"] for r in json.loads(cli("carrier", "breaker", "--format", "json").stdout)} == {
        "test_gb", "test_ng"}
