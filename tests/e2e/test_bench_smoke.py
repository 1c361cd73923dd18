"""`carrierpay bench --smoke` runs end to end on its own throwaway cluster, prints its figures and
passes its money checks. Timings are printed, never asserted (the machine is shared)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIGURE_LINES = [
    "pgbench TPS:",
    "payments/s (sustained):",
    "api.charge latency ms:",
    "time-to-final-state ms:",
    "per payment:",
    "WAL per payment:",
    "payments/s ÷ pgbench TPS:",
    "wait events at saturation",
    "renewals queued/s:",
    "renewals settled/s:",
    "money checks: ok",
]
PER_PAYMENT_LINES = {"per payment:", "WAL per payment:"}


def test_bench_smoke():
    env = os.environ | {"PYTHONPATH": str(REPO), "COLUMNS": "400", "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run([sys.executable, "-m", "carrierpay", "bench", "--smoke"], cwd=str(REPO), env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # On a starved machine no payment may finish inside the seconds-long window: then there is no
    # figure per payment to print, and the run says so (its money checks still ran on the drained run).
    starved = "no payment reached a final state inside the measuring window" in result.stdout
    for line in FIGURE_LINES:
        if starved and line in PER_PAYMENT_LINES:
            continue
        assert line in result.stdout, f"{line!r} missing from:\n{result.stdout}"
    assert "FAILED" not in result.stdout
    # WAL is attributed to our tables and their indexes by pg_walinspect, not left in one lump.
    assert starved or "cp.carrier_call" in result.stdout or "cp.procedure" in result.stdout
