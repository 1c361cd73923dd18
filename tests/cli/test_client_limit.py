"""`carrierpay merchant client limit`: an operator sets and clears an API client's request limit."""

from __future__ import annotations

from tests.core.world import load_world


def test_set_and_clear_a_clients_limit(cli, conn):
    load_world(conn)
    client = conn.execute("select admin.add_api_client('acme')").fetchone()[0]["client_id"]
    done = cli("merchant", "client", "limit", client, "25")
    assert done.returncode == 0, done.stderr
    assert "25" in done.stdout
    assert conn.execute("select requests_per_second from cp.api_client where client_id = %s",
                        [client]).fetchone()[0] == 25
    assert cli("merchant", "client", "limit", client).returncode == 0
    assert conn.execute("select requests_per_second from cp.api_client where client_id = %s",
                        [client]).fetchone()[0] is None
    refused = cli("merchant", "client", "limit", client, "0")
    assert refused.returncode != 0 and "CP127" in refused.stdout + refused.stderr
