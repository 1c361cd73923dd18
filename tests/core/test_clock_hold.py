"""A held business clock stands still across transactions while real time passes."""

from __future__ import annotations

import time


def test_a_held_clock_stands_still_until_moved(conn):
    held = conn.execute("select admin.hold_clock()").fetchone()[0]
    time.sleep(1.2)
    assert conn.execute("select cp.clock_now()").fetchone()[0] == held
    conn.execute("select admin.advance_clock(interval '1 hour')")
    time.sleep(0.2)
    later = conn.execute("select cp.clock_now()").fetchone()[0]
    assert (later - held).total_seconds() == 3600
    conn.execute("select admin.hold_clock(false)")
    time.sleep(1.2)
    assert (conn.execute("select cp.clock_now()").fetchone()[0] - later).total_seconds() >= 1
