"""The examples of docs/http-api.md run as written: every ```sh block, in order, in one bash session
against `carrierpay api serve` over HTTPS (a throwaway certificate) on the test world. Lines of a
block starting with `# ` are output the session must print, in that order."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.http_api.kit import gateway_url

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "http-api.md"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_examples_run_as_written(world_url, tls_files, tmp_path):
    blocks = BLOCK.findall(DOC.read_text())
    assert len(blocks) >= 5
    expected = [line[2:] for block in blocks for line in block.splitlines() if line.startswith("# ")]
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CARRIERPAY_DATABASE_URL": world_url,
           "API": f"https://127.0.0.1:{port}", "CURL_CA_BUNDLE": str(tls_files.ca)}
    server = subprocess.Popen([sys.executable, "-m", "carrierpay", "api", "serve", "--port", str(port),
                               "--cert", str(tls_files.server_cert), "--key", str(tls_files.server_key),
                               "--database-url", gateway_url(world_url)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        context = tls_files.client_context()
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/health", context=context, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError(server.stderr.read().decode()[-2000:] if server.poll() is not None
                                         else "server did not start") from None
                time.sleep(0.2)
        script = "set -euo pipefail\ncarrierpay() { python3 -m carrierpay \"$@\"; }\n" + "\n".join(blocks)
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
        lines = done.stdout.splitlines()
        position = 0
        for want in expected:
            while position < len(lines) and lines[position].strip() != want:
                position += 1
            assert position < len(lines), f"expected output line {want!r} not found in order:\n{done.stdout}"
            position += 1
    finally:
        server.terminate()
        server.wait(timeout=10)
