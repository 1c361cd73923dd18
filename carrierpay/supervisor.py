"""`carrierpay up`: every daemon of a deployment in one supervised process group.

Each daemon runs as its own child process (`python -m carrierpay <daemon command>`), so one that
crashes or is killed takes nothing else with it; the supervisor restarts it with back-off: a child
that dies within `restart.reset_after_s` (5 s) of starting is restarted after a delay doubling from
`restart.initial_backoff_s` (1 s) to `restart.max_backoff_s` (30 s), so a daemon that cannot start
does not spin; one that ran longer was healthy, and is restarted after the initial delay again. An
adapter killed every 15 seconds is thus down about a second each time, not for half a minute.
SIGTERM or SIGINT stops every child (SIGTERM, then SIGKILL after `stop_timeout_s`) and then the
supervisor. Children also get SIGTERM if the supervisor itself dies
(Linux parent-death signal), so no daemon outlives its group.

The daemons hold no state, so a restart loses nothing: see docs/daemons.md.

Configuration: a YAML file (`carrierpay.yaml` by default, `--config` or CARRIERPAY_CONFIG), whose
string values may use `${VAR}` or `${VAR:-default}` from the environment. Every key is optional:

    database_url: ${CARRIERPAY_DATABASE_URL}    # else the embedded cluster
    callback_base_url: https://cb.example.com   # else CARRIERPAY_CALLBACK_BASE_URL
    restart: {initial_backoff_s: 1, max_backoff_s: 30, reset_after_s: 5}
    metrics: {host: 127.0.0.1, port: 9460}      # /metrics: the database collector (daemon `metrics`) on
                # port, every other child on port+1, port+2 ... in order; port 0: any free port each;
                # enabled: false serves none
    stop_timeout_s: 15
    daemons:
      adapters:   {copies: 2, batch: 200, lease_s: 60, poll_s: 1, carriers: []}
      reconciler: {interval_s: 5, batch: 200}
      callbacks:  {host: 0.0.0.0, port: 8080}   # cert: PEM, key: PEM for HTTPS; client_ca: PEM for
                  # mutual_tls callbacks; max_connections, header_timeout_s, body_timeout_s, idle_timeout_s
      scheduler:  {interval_s: 1, batch: 1000}
      webhooks:   {interval_s: 1, batch: 100}   # allow_networks: [CIDR, ...], allow_http: true (see docs/daemons.md)
      history:    {interval_s: 1, batch: 500}
      api:        {host: 0.0.0.0, port: 8443}   # the merchant HTTP API: cert, key, the limits as callbacks,
                  # database_url: a login in carrierpay_gateway (else the one above; docs/http-api.md)
      metrics:    {ledger_check_s: 15}           # `carrierpay metrics serve` (read-only)
      dashboard:  {host: 127.0.0.1, port: 8700, refresh_s: 5}   # `carrierpay dashboard` (read-only)
      # any daemon: enabled: false to leave it out, copies: N to run N of it

The children inherit the environment (secrets, CARRIERPAY_SECRETS_FILE, CARRIERPAY_HISTORY_URL ...).
The supervisor writes the children's pids to `<CARRIERPAY_HOME>/up.json` as they change.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from carrierpay.parsing import yaml_problem

log = logging.getLogger("carrierpay.up")

DEFAULT_CONFIG = "carrierpay.yaml"
DAEMONS = ("adapters", "reconciler", "callbacks", "scheduler", "webhooks", "history", "api", "metrics",
           "dashboard")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or names something unknown."""


def expand(value: Any, environ: dict[str, str] | None = None) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string of a YAML document."""
    environ = os.environ if environ is None else environ
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: environ.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, list):
        return [expand(item, environ) for item in value]
    if isinstance(value, dict):
        return {key: expand(item, environ) for key, item in value.items()}
    return value


def _option(args: list[str], flag: str, value: Any) -> None:
    if value is not None and value != "":
        args += [flag, str(value)]


# What runs each daemon: its `carrierpay` command and the options its settings map to (flag, setting),
# in that order; the few settings that are lists or switches are added by daemon_args.
_SERVER = (("--host", "host"), ("--port", "port"), ("--cert", "cert"), ("--key", "key"))
_CONNECTIONS = (("--max-connections", "max_connections"), ("--header-timeout", "header_timeout_s"),
                ("--body-timeout", "body_timeout_s"), ("--idle-timeout", "idle_timeout_s"))
_LOOP = (("--interval", "interval_s"), ("--batch", "batch"))
_COMMANDS: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    "adapters": (("adapters", "run"), (("--batch", "batch"), ("--lease", "lease_s"), ("--poll", "poll_s"))),
    "reconciler": (("reconcile", "run"), _LOOP),
    "callbacks": (("callbacks", "serve"), _SERVER + (("--client-ca", "client_ca"),) + _CONNECTIONS),
    "scheduler": (("scheduler", "run"), _LOOP),
    "webhooks": (("webhooks", "run"), _LOOP),
    "history": (("history", "ship"), (("--interval", "interval_s"), ("--batch-size", "batch"))),
    "api": (("api", "serve"), _SERVER + _CONNECTIONS + (("--rate-limit", "rate_limit"), ("--processes", "processes"),
                                                       ("--database-url", "database_url"))),
    "metrics": (("metrics", "serve"), (("--ledger-check", "ledger_check_s"),)),
    "dashboard": (("dashboard",), (("--host", "host"), ("--port", "port"), ("--refresh", "refresh_s"))),
}


def daemon_args(name: str, settings: dict[str, Any], callback_base_url: str | None) -> list[str]:
    """The `carrierpay ...` arguments that run one daemon with its settings."""
    if name not in _COMMANDS:
        raise ConfigError(f"unknown daemon {name!r}; known: {', '.join(DAEMONS)}")
    command, options = _COMMANDS[name]
    args = list(command)
    for flag, key in options:
        _option(args, flag, settings.get(key))
    if name == "adapters":
        for carrier in settings.get("carriers") or []:
            args += ["--carrier", str(carrier)]
    if name in ("adapters", "reconciler"):
        _option(args, "--callback-base-url", callback_base_url)
    if name == "webhooks":
        networks = settings.get("allow_networks") or []
        if isinstance(networks, str):  # a ${VAR} holding a list
            networks = networks.replace(",", " ").split()
        for network in networks:
            args += ["--allow-network", str(network)]
        if settings.get("allow_http") in (True, "true", "yes", "1", "on"):
            args.append("--allow-http")
    return args


@dataclass
class ChildSpec:
    name: str  # e.g. adapters-1
    args: list[str]  # after `python -m carrierpay`
    metrics: list[str] = field(default_factory=list)  # where it serves /metrics (added to args when started)


@dataclass
class UpConfig:
    children: list[ChildSpec]
    database_url: str | None = None
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    reset_after_s: float = 5.0  # a child that ran this long was healthy: its next restart is quick again
    stop_timeout_s: float = 15.0


def load_config(path: Path | None, environ: dict[str, str] | None = None,
                database_url: str | None = None) -> UpConfig:
    """Read the YAML configuration (a missing default file means: every daemon, one copy, defaults)."""
    environ = os.environ if environ is None else environ
    document: dict[str, Any] = {}
    explicit = path is not None or bool(environ.get("CARRIERPAY_CONFIG"))
    path = Path(path or environ.get("CARRIERPAY_CONFIG") or DEFAULT_CONFIG)
    if path.exists():
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML at {yaml_problem(exc)}") from None
        if not isinstance(document, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    elif explicit:
        raise ConfigError(f"configuration file {path} does not exist")
    document = expand(document, environ)
    unknown = set(document) - {"database_url", "callback_base_url", "restart", "stop_timeout_s", "daemons", "metrics"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    daemons = document.get("daemons") or {}
    if not isinstance(daemons, dict):
        raise ConfigError(f"{path}: daemons must be a mapping of daemon name to settings")
    for name in daemons:
        if name not in DAEMONS:
            raise ConfigError(f"{path}: unknown daemon {name!r}; known: {', '.join(DAEMONS)}")
    callback_base = document.get("callback_base_url") or environ.get("CARRIERPAY_CALLBACK_BASE_URL") or None
    children: list[ChildSpec] = []
    for name in DAEMONS:
        settings = daemons.get(name) or {}
        if not isinstance(settings, dict):
            raise ConfigError(f"{path}: daemons.{name} must be a mapping")
        if settings.get("enabled", True) in (False, "false", "no", "0"):
            continue
        copies = int(settings.get("copies", 1))
        if copies < 0:
            raise ConfigError(f"{path}: daemons.{name}.copies must be 0 or more")
        args = daemon_args(name, settings, callback_base)
        if name == "callbacks" and copies > 1 and int(settings.get("port", 8080)) != 0:
            raise ConfigError(f"{path}: several callback servers cannot share port {settings.get('port', 8080)}")
        if name == "api" and copies > 1 and int(settings.get("port", 8443)) != 0:
            raise ConfigError(f"{path}: several API servers cannot share port {settings.get('port', 8443)}")
        for copy in range(1, copies + 1):
            children.append(ChildSpec(f"{name}-{copy}", list(args)))
    _assign_metrics_ports(children, document.get("metrics") or {}, path)
    restart = document.get("restart") or {}
    return UpConfig(
        children=children,
        database_url=database_url or document.get("database_url") or environ.get("CARRIERPAY_DATABASE_URL") or None,
        initial_backoff_s=float(restart.get("initial_backoff_s", 1.0)),
        max_backoff_s=float(restart.get("max_backoff_s", 30.0)),
        reset_after_s=float(restart.get("reset_after_s", 5.0)),
        stop_timeout_s=float(document.get("stop_timeout_s", 15.0)),
    )


def _assign_metrics_ports(children: list[ChildSpec], settings: Any, path: Path) -> None:
    """The database collector on the first port, each other child on the next ones."""
    if not isinstance(settings, dict):
        raise ConfigError(f"{path}: metrics must be a mapping (host, port, enabled)")
    if settings.get("enabled", True) in (False, "false", "no", "0"):
        return
    host = str(settings.get("host") or "127.0.0.1")
    try:
        base = int(settings.get("port", 9460))
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: metrics.port must be a port number") from None
    following = base + 1
    for child in children:
        if child.args[:2] == ["metrics", "serve"]:
            child.metrics = ["--port", str(base), "--host", host]
        elif child.args[0] == "dashboard":
            continue  # a web page, not a daemon with counters
        else:
            child.metrics = ["--metrics-port", str(following if base else 0), "--metrics-host", host]
            following += 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Child:
    spec: ChildSpec
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    backoff: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    exits: list[int] = field(default_factory=list)


class Supervisor:
    def __init__(self, config: UpConfig, *, state_file: Path | None = None, python: str = sys.executable) -> None:
        self.config = config
        self.children = [Child(spec, backoff=config.initial_backoff_s) for spec in config.children]
        self.state_file = state_file
        self.python = python
        self.stop = threading.Event()

    def _command(self, spec: ChildSpec) -> list[str]:
        args = [self.python, "-m", "carrierpay", *spec.args, *spec.metrics]
        # A daemon given its own login (the API server's, in carrierpay_gateway) keeps it.
        if self.config.database_url and "--database-url" not in spec.args:
            args += ["--database-url", self.config.database_url]
        return args

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(self._command(child.spec), preexec_fn=_die_with_parent)
        child.started_at = time.monotonic()
        child.restart_at = None
        log.info("%s started (pid %d): carrierpay %s", child.spec.name, child.process.pid, " ".join(child.spec.args))
        self._write_state()

    def _write_state(self) -> None:
        if self.state_file is None:
            return
        state = {"supervisor": os.getpid(),
                 "children": {c.spec.name: {"pid": c.process.pid if c.process and c.process.poll() is None else None,
                                            "restarts": c.restarts, "args": c.spec.args}
                              for c in self.children}}
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2) + "\n")
        temporary.replace(self.state_file)

    def _check(self, child: Child, now: float) -> None:
        if child.process is not None and child.process.poll() is not None:
            code = child.process.returncode
            child.exits.append(code)
            ran = now - child.started_at
            if ran >= self.config.reset_after_s:
                child.backoff = self.config.initial_backoff_s
            log.warning("%s (pid %d) exited with %s after %.1fs; restarting in %.1fs",
                        child.spec.name, child.process.pid, code, ran, child.backoff)
            child.process = None
            child.restart_at = now + child.backoff
            child.backoff = min(child.backoff * 2, self.config.max_backoff_s)
            self._write_state()
        if child.process is None and child.restart_at is not None and now >= child.restart_at:
            child.restarts += 1
            self._start(child)

    def run(self) -> int:
        """Start every child, keep them running until `stop` is set, then stop them all."""
        if not self.children:
            log.error("no daemon to run: every daemon is disabled in the configuration")
            return 1
        for child in self.children:
            self._start(child)
        while not self.stop.wait(0.2):
            now = time.monotonic()
            for child in self.children:
                self._check(child, now)
        self.shutdown()
        return 0

    def shutdown(self) -> None:
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
        log.info("stopping %d daemon(s)", len(running))
        for child in running:
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.stop_timeout_s
        for child in running:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) did not stop in %.0fs; killing it", child.spec.name, child.process.pid,
                            self.config.stop_timeout_s)
                child.process.kill()
                child.process.wait()
        for child in self.children:
            child.process = None
        self._write_state()
        log.info("all daemons stopped")
