"""`carrierpay up`: the supervised process group, as a subprocess against a real database."""

from __future__ import annotations

import itertools
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

from carrierpay.supervisor import ConfigError, Supervisor, load_config

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
  api: {port: 0}
  dashboard: {port: 0}
metrics: {port: 0}
"""


def test_config_expands_the_environment_and_counts_copies(tmp_path):
    path = tmp_path / "carrierpay.yaml"
    path.write_text(CONFIG)
    config = load_config(path, environ={"SCHEDULER_INTERVAL": "2"})
    names = [child.name for child in config.children]
    assert names == ["adapters-1", "adapters-2", "reconciler-1", "callbacks-1", "scheduler-1", "webhooks-1",
                     "history-1", "api-1", "metrics-1", "dashboard-1"]
    # The API server may log in as its own gateway role; the supervisor then does not replace it.
    path.write_text('daemons: {api: {port: 0, database_url: "postgresql://carrierpay_api@db.example/cp"}}\n')
    api = next(child for child in load_config(path, environ={}, database_url="postgresql://owner@db.example/cp")
               .children if child.name == "api-1")
    command = Supervisor(load_config(path, environ={}, database_url="postgresql://owner@db.example/cp"))._command(api)
    assert command.count("--database-url") == 1
    assert command[command.index("--database-url") + 1] == "postgresql://carrierpay_api@db.example/cp"
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


class _Process:
    """What the supervisor sees of a child: running (returncode None) or ended."""

    def __init__(self, pid: int) -> None:
        self.pid, self.returncode = pid, None

    def poll(self) -> int | None:
        return self.returncode


class _SimulatedSupervisor(Supervisor):
    """The supervisor's restart decisions on a simulated clock; no process is started."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.now = 0.0
        self.started: list[float] = []

    def _start(self, child) -> None:
        child.process = _Process(len(self.started) + 1)
        child.started_at = self.now
        child.restart_at = None
        self.started.append(self.now)


TICK = 0.125  # exact in binary, so the simulated clock adds up without rounding


def _run(supervisor: _SimulatedSupervisor, seconds: float, lives: float) -> float:
    """Tick the supervisor while each run of its child is killed after `lives` seconds; returns the
    fraction of the time the child was up."""
    child = supervisor.children[0]
    up = 0.0
    for _ in range(round(seconds / TICK)):
        supervisor.now += TICK
        if child.process is not None:
            up += TICK
            if supervisor.now - child.started_at >= lives:
                child.process.returncode = -signal.SIGKILL
        supervisor._check(child, supervisor.now)
    return up / seconds


def _restart_delays(supervisor: _SimulatedSupervisor, lives: float) -> list[float]:
    """How long the child was down before each restart."""
    return [start - (previous + lives) for previous, start in itertools.pairwise(supervisor.started)]


def test_restart_back_off_resets_after_a_healthy_run(tmp_path):
    path = tmp_path / "carrierpay.yaml"
    path.write_text("daemons: {reconciler: {enabled: false}, callbacks: {enabled: false}, "
                    "scheduler: {enabled: false}, webhooks: {enabled: false}, history: {enabled: false}, "
                    "api: {enabled: false}, metrics: {enabled: false}, dashboard: {enabled: false}}\n")
    config = load_config(path, environ={})  # the default restart settings
    assert [child.name for child in config.children] == ["adapters-1"]

    # An adapter SIGKILLed every 15 s ran long enough each time to count as healthy: it comes back
    # after the initial delay every time, and is up nearly all the time.
    killed = _SimulatedSupervisor(config)
    killed._start(killed.children[0])
    up = _run(killed, 600, lives=15)
    assert set(_restart_delays(killed, 15)) == {config.initial_backoff_s}
    assert up > 0.9, up

    # A daemon that dies as it starts backs off, doubling up to the maximum ...
    crashing = _SimulatedSupervisor(config)
    crashing._start(crashing.children[0])
    _run(crashing, 120, lives=TICK)
    delays = _restart_delays(crashing, TICK)
    assert delays[:6] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0] and set(delays[6:]) <= {30.0}, delays
    # ... until it runs long enough to be healthy: then the next restart is quick again.
    started = len(crashing.started)
    _run(crashing, 120, lives=config.reset_after_s + 1)
    assert _restart_delays(crashing, config.reset_after_s + 1)[started:started + 1] == [1.0]


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
            return pids if len(pids) == 10 and all(pid and _alive(pid) for pid in pids.values()) else None

        pids = _wait_for(all_running, what="ten daemons (eight, the metrics collector and the dashboard)")
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


def test_every_child_gets_its_own_metrics_port(tmp_path):
    path = tmp_path / "carrierpay.yaml"
    path.write_text("metrics: {port: 9600, host: 0.0.0.0}\ndaemons: {adapters: {copies: 2}}\n")
    config = load_config(path, environ={})
    ports = {child.name: child.metrics for child in config.children}
    assert ports["metrics-1"] == ["--port", "9600", "--host", "0.0.0.0"]
    assert ports["adapters-1"] == ["--metrics-port", "9601", "--metrics-host", "0.0.0.0"]
    assert ports["adapters-2"] == ["--metrics-port", "9602", "--metrics-host", "0.0.0.0"]
    assert len({tuple(m) for m in ports.values()}) == len(ports)
    path.write_text("metrics: {enabled: false}\ndaemons: {metrics: {enabled: false}}\n")
    assert all(child.metrics == [] for child in load_config(path, environ={}).children)
