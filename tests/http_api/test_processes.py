"""`carrierpay api serve --processes N`: N servers on one port, each answering; SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_several_processes_share_the_port_and_stop_together(world_url):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    server = subprocess.Popen([sys.executable, "-m", "carrierpay", "api", "serve", "--port", str(port),
                               "--processes", "3", "--database-url", world_url],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read().decode()[-2000:]
                time.sleep(0.2)
        workers = _children(server.pid)
        assert len(workers) == 2, workers
        # Every process listens: new connections are spread among them, and all of them answer.
        for _ in range(30):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
                assert answer.status == 200
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        for pid in workers:
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_processes_need_a_fixed_port(world_url):
    env = os.environ | {"PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "carrierpay", "api", "serve", "--port", "0", "--processes", "2",
                           "--database-url", world_url], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "--processes" in done.stdout + done.stderr
