"""The shipped alert rules are valid Prometheus rules and fire when, and only when, they should
(deploy/prometheus/alerts_test.yml, run by promtool from Debian's prometheus package)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing (.ci/run installs it)")


def _promtool(*args: str, cwd: Path = RULES) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_rules_are_valid():
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 rules found" in result.stdout


def test_rules_fire_as_their_unit_tests_say():
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_expectation_fails(tmp_path):
    """The unit tests can fail: the same rules with an expectation turned around are refused."""
    shutil.copy(RULES / "alerts.yml", tmp_path / "alerts.yml")
    broken = (RULES / "alerts_test.yml").read_text().replace(
        "      - eval_time: 1442m\n        alertname: CarrierSuccessRateDropped\n        exp_alerts: []",
        "      - eval_time: 1442m\n        alertname: CarrierSuccessRateDropped\n        exp_alerts:\n"
        "          - exp_labels: {severity: page, carrier: vod_gb}")
    (tmp_path / "alerts_test.yml").write_text(broken)
    result = _promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0
