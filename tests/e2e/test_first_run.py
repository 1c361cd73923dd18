"""The README's main command as a newcomer runs it: as root, from a checkout in a private directory, and
interrupted half-way. The demo must run, and must never leave behind a server it started."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.e2e.as_a_user import read_until, run_carrierpay, start_carrierpay

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a private directory only matters when we are root")


def carrierpay(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    # No CARRIERPAY_HOME: the README's command runs with the default, ./.carrierpay.
    return run_carrierpay(cwd, *args, timeout=timeout)


@pytest.fixture
def private_checkout():
    """A directory only root can enter, like a clone under /root."""
    outer = Path(tempfile.mkdtemp(prefix="carrierpay-private-", dir="/tmp"))
    os.chmod(outer, 0o700)
    checkout = outer / "carrierpay"
    checkout.mkdir()
    try:
        yield checkout
    finally:
        carrierpay(checkout, "db", "down")
        state = checkout / ".carrierpay" / "cluster.json"
        if state.exists():
            server_dir = json.loads(state.read_text()).get("server_dir")
            if server_dir:
                shutil.rmtree(server_dir, ignore_errors=True)
        shutil.rmtree(outer, ignore_errors=True)


def server_running(checkout: Path) -> bool:
    status = carrierpay(checkout, "db", "status")
    return "embedded cluster: running" in status.stdout


def test_root_runs_the_demo_from_a_private_directory(private_checkout):
    run = carrierpay(private_checkout, "demo", "--subscribers", "200", "--days", "1", timeout=280)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "all checks passed" in run.stdout
    # Said once, where the server's files went and why.
    assert run.stdout.count("cannot reach") == 1
    state = json.loads((private_checkout / ".carrierpay" / "cluster.json").read_text())
    assert state["server_dir"].startswith("/var/lib/carrierpay/clusters/")
    assert not server_running(private_checkout), "the demo stops the server it started"
    # The other commands find the same cluster from the checkout.
    assert carrierpay(private_checkout, "db", "up").returncode == 0
    url = carrierpay(private_checkout, "db", "url", "--database", "carrierpay_demo").stdout.strip()
    assert url.endswith("/carrierpay_demo")
    assert server_running(private_checkout)


def test_an_interrupted_demo_stops_the_server_it_started(private_checkout):
    demo = start_carrierpay(private_checkout, "demo", "--subscribers", "2000", "--days", "7")
    try:
        seen = read_until(demo, "recreated and migrated", 120)
        assert any("recreated and migrated" in line for line in seen), "".join(seen)
        time.sleep(3)  # into the run: simulators and daemons are up
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=90)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode != 0
    assert "Traceback" not in rest, rest[-3000:]
    assert "stopped the embedded PostgreSQL" in rest
    assert not server_running(private_checkout)
