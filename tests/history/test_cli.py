"""`carrierpay history …` as an operator runs it: real subprocesses against the test cluster."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def carrierpay(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "carrierpay", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=ROOT)


@pytest.fixture
def cli_env(db_url, history_url):
    env = dict(os.environ)
    env |= {"CARRIERPAY_DATABASE_URL": db_url, "CARRIERPAY_HISTORY_URL": history_url, "COLUMNS": "220",
            "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")}
    return env


def test_ship_once_then_read_the_payment(cli_env, world):
    alice = world.subscriber("+447700900123")
    paid = world.payment_with_calls(alice, calls=2)
    world.event("procedure", paid["procedure_id"], "receipt_sent", {"msisdn": "+447700900123",
                                                                    "text": "Your PIN is 4821"})
    outbox = len(world.outbox_keys())

    shipped = carrierpay("history", "ship", "--once", "--batch-size", "3", env=cli_env)
    assert shipped.returncode == 0, shipped.stderr
    assert f"shipped {outbox - 2} event(s) and 2 carrier log(s)" in shipped.stdout
    assert "history lag" in shipped.stdout
    assert world.outbox_keys() == set()

    shown = carrierpay("history", "payment", str(paid["procedure_id"]), env=cli_env)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert f"payment {paid['procedure_id']}: {outbox} record(s)" in out
    assert out.index("created") < out.index("carrier charge: transient") < out.index("carrier charge: succeeded")
    assert "+4477****123" in out and "4821" not in out and "447700900123" not in out

    by_subscriber = carrierpay("history", "subscriber", str(alice), env=cli_env)
    assert by_subscriber.returncode == 0 and "receipt_sent" in by_subscriber.stdout

    lag = carrierpay("history", "lag", env=cli_env)
    assert lag.returncode == 0 and "carrier_log" in lag.stdout

    missing = carrierpay("history", "payment", "999999", env=cli_env)
    assert missing.returncode == 1 and "no history for payment 999999" in missing.stdout


def test_ship_once_with_the_store_down_fails_and_keeps_the_outbox(cli_env, world):
    world.payment_with_calls(world.subscriber(), calls=1)
    before = world.outbox_keys()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = cli_env | {"CARRIERPAY_HISTORY_URL": f"postgresql://postgres@127.0.0.1:{port}/carrierpay_history"}

    failed = carrierpay("history", "ship", "--once", env=env)
    assert failed.returncode == 1
    assert "nothing was lost" in failed.stderr and "Traceback" not in failed.stderr
    assert world.outbox_keys() == before
    assert "event" in failed.stdout and "Connection refused" in failed.stdout  # the lag table shows why

    shipped = carrierpay("history", "ship", "--once", env=cli_env)
    assert shipped.returncode == 0 and "Connection refused" not in shipped.stdout
    assert world.outbox_keys() == set()


def test_retention_command(cli_env, world):
    world.payment_with_calls(world.subscriber(), calls=1)
    assert carrierpay("history", "ship", "--once", env=cli_env).returncode == 0
    done = carrierpay("history", "retention", "--event-days", "30", "--carrier-log-days", "7", env=cli_env)
    assert done.returncode == 0, done.stderr
    assert "nothing to remove" in done.stdout
