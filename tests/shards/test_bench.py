"""`carrierpay bench --shards 2` pays through a front into two partitions (each its own cluster, as
`db up --shards 2` builds them) and passes its money checks on each partition and in total. Timings
are printed, never asserted (the machine is shared)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_over_two_partitions_balances_per_partition_and_in_total():
    env = os.environ | {"PYTHONPATH": str(REPO), "COLUMNS": "400", "PYTHONIOENCODING": "utf-8"}
    # --duration past the warmup so that the daemons of both partitions settle payments in the window.
    result = subprocess.run([sys.executable, "-m", "carrierpay", "bench", "--shards", "2", "--duration", "6",
                             "--clients", "4", "--adapters", "1", "--renewals", "0", "--no-pgbench", "--fast"],
                            cwd=str(REPO), env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "FAILED" not in result.stdout
    for partition in (0, 1):
        assert f"partition {partition}: money checks: ok" in lines, result.stdout
        charged = [line for line in lines if line.startswith(f"partition {partition}: money: simulator charged")]
        # Each partition's own daemons charged something: the front spread the numbers over both.
        assert charged and "in 0 charges" not in charged[0], result.stdout
    assert "money checks (all partitions): ok" in lines
    assert any(line.startswith("payments/s (sustained):") and "on 2 partitions" in line for line in lines)
