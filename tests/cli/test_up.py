"""`carrierpay up`: the supervised process group, as a subprocess against a real database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from carrierpay.supervisor import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]

CONFIG = """
restart: {initial_backoff_s: 0.2, max_backoff_s: 1}
stop_timeout_s: 20
daemons:
  adapters: {copies: 2, poll_s: 0.2}
  reconciler: {interval_s: 0.5}
  callbacks: {port: 0}
  scheduler: {interval_s: "${SCHEDULER_INTERVAL:-0.5}"}
  webhooks: {interval_s: 0.5}
  history: {interval_s: 0.5}
"""


def test_config_expands_the_environment_and_counts_copies(tmp_path):
    path = tmp_path / "carrierpay.yaml"
    path.write_text(CONFIG)
    config = load_config(path, environ={"SCHEDULER_INTERVAL": "2"})
    names = [child.name for child in config.children]
    assert names == ["adapters-1", "adapters-2", "reconciler-1", "callbacks-1", "scheduler-1", "webhooks-1",
                     "history-1"]
    scheduler = next(child for child in config.children if child.name == "scheduler-1")
    assert scheduler.args == ["scheduler", "run", "--interval", "2"]
    assert config.initial_backoff_s == 0.2 and config.stop_timeout_s == 20


def test_config_errors_name_the_problem(tmp_path):
    path = tmp_path / "carrierpay.yaml"
    path.write_text("daemons: {mailer: {}}\n")
    with pytest.raises(ConfigError, match="unknown daemon 'mailer'"):
        load_config(path, environ={})
    path.write_text("daemons: {webhooks: {enabled: false}, history: {copies: 0}}\n")
    assert "webhooks-1" not in [c.name for c in load_config(path, environ={}).children]
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml", environ={})


def _state(home: Path) -> dict:
    try:
        return json.loads((home / "up.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_up_runs_every_daemon_restarts_a_killed_one_and_stops_all_on_sigterm(db_url):
    home = Path(tempfile.mkdtemp(prefix="carrierpay-up-", dir="/tmp"))
    config = home / "carrierpay.yaml"
    config.write_text(CONFIG)
    env = {key: value for key, value in os.environ.items() if not key.startswith("CARRIERPAY_")}
    env |= {"CARRIERPAY_HOME": str(home),
            "CARRIERPAY_HISTORY_URL": db_url.rsplit("/", 1)[0] + f"/h_{uuid.uuid4().hex[:10]}",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))}
    log = (home / "up.log").open("w")
    supervisor = subprocess.Popen([sys.executable, "-m", "carrierpay", "up", "--config", str(config),
                                   "--database-url", db_url], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def all_running():
            children = _state(home).get("children", {})
            pids = {name: child["pid"] for name, child in children.items()}
            return pids if len(pids) == 7 and all(pid and _alive(pid) for pid in pids.values()) else None

        pids = _wait_for(all_running, what="seven daemons")
        assert _state(home)["supervisor"] == supervisor.pid
        assert all(_parent_of(pid) == supervisor.pid for pid in pids.values())
        time.sleep(2)  # they stay up: none crashed on start
        assert all(_alive(pid) for pid in pids.values()), (home / "up.log").read_text()[-3000:]

        os.kill(pids["scheduler-1"], signal.SIGKILL)

        def restarted():
            child = _state(home).get("children", {}).get("scheduler-1", {})
            return child if child.get("pid") not in (None, pids["scheduler-1"]) and _alive(child["pid"]) else None

        child = _wait_for(restarted, what="the killed scheduler to come back")
        assert child["restarts"] == 1
        assert _parent_of(child["pid"]) == supervisor.pid
        assert all(_alive(pid) for name, pid in pids.items() if name != "scheduler-1")

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
        survivors = [pid for pid in [*pids.values(), child["pid"]] if _alive(pid)]
        assert survivors == []
        assert "all daemons stopped" in (home / "up.log").read_text()
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
        log.close()
