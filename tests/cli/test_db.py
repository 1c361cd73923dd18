"""`carrierpay db …` as an operator runs it: real subprocesses, real cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


def carrierpay(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "carrierpay", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture
def cli_env():
    home = Path(tempfile.mkdtemp(prefix="carrierpay-cli-", dir="/tmp"))
    os.chmod(home, 0o755)
    env = {k: v for k, v in os.environ.items() if k != "CARRIERPAY_DATABASE_URL"}
    env |= {"CARRIERPAY_HOME": str(home), "COLUMNS": "200"}
    yield env
    carrierpay("db", "down", env=env)
    shutil.rmtree(home, ignore_errors=True)  # the cluster's files: tens of megabytes a test


def test_up_migrate_twice_url_status_down(cli_env):
    first = carrierpay("db", "up", env=cli_env)
    assert first.returncode == 0, first.stderr
    assert "created cluster" in first.stdout and "created database carrierpay" in first.stdout

    again = carrierpay("db", "up", env=cli_env)
    assert again.returncode == 0 and "already running" in again.stdout

    check_before = carrierpay("db", "migrate", "--check", env=cli_env)
    assert check_before.returncode == 1
    assert "pending revision 0001" in check_before.stdout

    assert carrierpay("db", "migrate", env=cli_env).returncode == 0
    second = carrierpay("db", "migrate", env=cli_env)
    assert second.returncode == 0 and "nothing changed" in second.stdout
    assert carrierpay("db", "migrate", "--check", env=cli_env).returncode == 0

    url = carrierpay("db", "url", env=cli_env).stdout.strip()
    psql = subprocess.run(["psql", "-X", "-A", "-t", url, "-c", "select 1"], capture_output=True, text=True)
    assert psql.stdout.strip() == "1"

    status = carrierpay("db", "status", env=cli_env)
    assert status.returncode == 0 and "running" in status.stdout and "up to date" in status.stdout

    down = carrierpay("db", "down", env=cli_env)
    assert down.returncode == 0 and "stopped" in down.stdout
    stopped = carrierpay("db", "status", env=cli_env)
    assert stopped.returncode == 1 and "stopped" in stopped.stdout


def test_commands_needing_a_database_say_so_without_traceback(cli_env):
    result = carrierpay("db", "migrate", env=cli_env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "carrierpay db up" in result.stderr


def test_configured_server_is_used_and_nothing_is_started(cli_env, db_url):
    env = cli_env | {"CARRIERPAY_DATABASE_URL": db_url}
    up = carrierpay("db", "up", env=env)
    assert up.returncode == 0 and "nothing to start" in up.stdout
    assert not (Path(env["CARRIERPAY_HOME"]) / "pgdata").exists()
    assert carrierpay("db", "url", env=env).stdout.strip() == db_url
    assert carrierpay("db", "migrate", "--check", env=env).returncode == 0


def test_unreachable_configured_server_is_one_line(cli_env):
    env = cli_env | {"CARRIERPAY_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    result = carrierpay("db", "migrate", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "error:" in result.stderr


def test_migrate_takes_a_lock_timeout(cli_env, db_url):
    env = cli_env | {"CARRIERPAY_DATABASE_URL": db_url}
    ok = carrierpay("db", "migrate", "--lock-timeout", "2s", env=env)
    assert ok.returncode == 0, ok.stderr
    bad = carrierpay("db", "migrate", "--lock-timeout", "soon", env=env)
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr and "lock timeout 'soon'" in bad.stderr
