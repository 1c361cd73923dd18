"""`carrierpay bench --smoke --http` drives the payment load through api.charge, then the same load through the
merchant HTTP API (tokens included, its own server processes), prints the ratio of the two and passes the same
money checks. Timings are printed, never asserted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_http_smoke():
    env = os.environ | {"PYTHONPATH": str(REPO), "COLUMNS": "400", "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run([sys.executable, "-m", "carrierpay", "bench", "--smoke", "--http", "--no-pgbench",
                             "--renewals", "0"], cwd=str(REPO), env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "payments/s (sustained):" in result.stdout and "money checks: ok" in result.stdout, result.stdout
    assert "api.charge errors" not in result.stdout, result.stdout
    assert "[HTTP createPayment] payments/s (sustained):" in result.stdout, result.stdout
    assert "[SQL api.charge] payments/s (sustained):" in result.stdout, result.stdout
    assert "HTTP ÷ SQL payments/s:" in result.stdout, result.stdout
