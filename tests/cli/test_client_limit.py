"""`carrierpay merchant client limit`: an operator sets and clears an API client's request limit."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.core.world import load_world


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"CARRIERPAY_DATABASE_URL": db_url, "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "carrierpay", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_set_and_clear_a_clients_limit(db_url, conn):
    load_world(conn)
    client = conn.execute("select admin.add_api_client('acme')").fetchone()[0]["client_id"]
    done = _cli(db_url, "merchant", "client", "limit", client, "25")
    assert done.returncode == 0, done.stderr
    assert "25" in done.stdout
    assert conn.execute("select requests_per_second from cp.api_client where client_id = %s",
                        [client]).fetchone()[0] == 25
    assert _cli(db_url, "merchant", "client", "limit", client).returncode == 0
    assert conn.execute("select requests_per_second from cp.api_client where client_id = %s",
                        [client]).fetchone()[0] is None
    refused = _cli(db_url, "merchant", "client", "limit", client, "0")
    assert refused.returncode != 0 and "CP127" in refused.stdout + refused.stderr
