"""`carrierpay demo --keep`: the report printed must stay true while the user explores, so business time is
held where the run ended until the user moves it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.e2e.as_a_user import read_until, run_carrierpay, start_carrierpay


def test_keep_holds_the_business_clock_until_the_user_moves_it():
    home = Path(tempfile.mkdtemp(prefix="carrierpay-keep-", dir="/tmp"))
    os.chmod(home, 0o755)

    def carrierpay(*args: str) -> subprocess.CompletedProcess:
        return run_carrierpay(home, *args, home=home)

    demo = start_carrierpay(home, "demo", "--subscribers", "200", "--days", "1", "--keep", home=home)
    try:
        seen = read_until(demo, "keep running until you press Ctrl-C", 240)
        assert any("held where the run ended" in line for line in seen), "".join(seen)[-3000:]
        url = carrierpay("db", "url", "--database", "carrierpay_demo").stdout.strip()
        with psycopg.connect(url, autocommit=True) as conn:
            first = conn.execute("select cp.clock_now()").fetchone()[0]
            time.sleep(2.5)  # the demo's scheduler ticks every second meanwhile
            assert conn.execute("select cp.clock_now()").fetchone()[0] == first
            moved = conn.execute("select admin.advance_clock(interval '1 hour')").fetchone()[0]
            assert (moved - first).total_seconds() == 3600
        demo.send_signal(signal.SIGINT)
        demo.communicate(timeout=90)
    finally:
        if demo.poll() is None:
            demo.kill()
        carrierpay("db", "down")
        shutil.rmtree(home, ignore_errors=True)
