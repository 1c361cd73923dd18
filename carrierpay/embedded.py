"""A private PostgreSQL cluster that carrierpay creates, starts and stops itself.

PostgreSQL refuses to run as root, so when we are root the server runs as the `postgres`
system user and the directories it writes are handed to that user.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

SUPPORTED_MAJOR = 15
SERVER_USER_WHEN_ROOT = "postgres"
SUPERUSER = "postgres"
# Where root keeps clusters whose home the postgres user cannot reach.
RELOCATED_CLUSTERS = Path("/var/lib/carrierpay/clusters")


def hint_for_server_error(message: str) -> str | None:
    """The fix for server errors an operator cannot act on as worded, or None."""
    if "could not load library" in message or "undefined symbol" in message:
        return ("the PostgreSQL binaries were upgraded under the running server; restart it: "
                "carrierpay db down && carrierpay db up")
    return None


class ClusterError(RuntimeError):
    """A problem with the embedded cluster, with a message meant for the operator."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


def find_bindir() -> Path:
    """Locate the PostgreSQL server binaries (initdb, pg_ctl, postgres)."""
    candidates = []
    if env := os.environ.get("CARRIERPAY_PG_BINDIR"):
        candidates.append(Path(env))
    candidates.append(Path(f"/usr/lib/postgresql/{SUPPORTED_MAJOR}/bin"))
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    raise ClusterError(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found",
        hint=f"install them (apt-get install postgresql-{SUPPORTED_MAJOR}) or set CARRIERPAY_PG_BINDIR",
    )


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class ClusterStatus:
    running: bool
    datadir: Path
    port: int | None
    pid: int | None


class EmbeddedCluster:
    """One PostgreSQL data directory under `home`, with its socket directory, log and state file."""

    def __init__(self, home: Path, *, fast: bool = False, settings: dict[str, str] | None = None):
        self.home = Path(home).resolve()
        self.state_file = self.home / "cluster.json"
        # What the server itself writes (data, socket, log) lives in server_dir: the home, unless we
        # are root and the postgres user cannot reach it (a checkout under a private /root).
        self.server_dir = self._server_dir()
        self.datadir = self.server_dir / "pgdata"
        self.socket_dir = self.server_dir / "run"
        self.logfile = self.server_dir / "postgres.log"
        # The superuser's password, readable by whoever made the cluster and nobody else.
        self.password_file = self.home / "superuser.password"
        # fast=True trades durability for speed: only for throwaway test clusters.
        self.fast = fast
        # Server settings on top of ours, written at init (a shard takes part in two-phase commits).
        self.extra_settings = dict(settings or {})
        self._bindir: Path | None = None

    # -- process plumbing -------------------------------------------------------------------
    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_bindir()
        return self._bindir

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def _server_cmd(self, program: str, *args: str) -> list[str]:
        cmd = [str(self.bindir / program), *args]
        if self.as_root:
            return ["runuser", "-u", SERVER_USER_WHEN_ROOT, "--", *cmd]
        return cmd

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            self._server_cmd(program, *args), capture_output=True, text=True, check=False, cwd="/"
        )
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()
            raise ClusterError(f"{program} failed: {detail}", hint=f"see {self.logfile}")
        return result

    def _hand_to_server_user(self, *paths: Path) -> None:
        if not self.as_root:
            return
        user = pwd.getpwnam(SERVER_USER_WHEN_ROOT)
        for path in paths:
            os.chown(path, user.pw_uid, user.pw_gid)

    def _server_user_can_reach(self, path: Path) -> bool:
        """Whether the server's user can walk to `path` (or, if it does not exist yet, its nearest ancestor)."""
        while not path.exists() and path != path.parent:
            path = path.parent
        probe = subprocess.run(
            ["runuser", "-u", SERVER_USER_WHEN_ROOT, "--", "test", "-x", str(path)],
            capture_output=True,
            check=False,
        )
        return probe.returncode == 0

    def _server_dir(self) -> Path:
        recorded = self._read_state().get("server_dir")
        if recorded:
            return Path(recorded)
        if not self.as_root or (self.home / "pgdata").exists() or self._server_user_can_reach(self.home):
            return self.home
        # One directory per home (its path hashed), so two checkouts never share a cluster.
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
        return RELOCATED_CLUSTERS / f"{self.home.parent.name or 'root'}-{digest}"

    def describe_location(self) -> str:
        """Where the cluster is, and why, in one line for the operator."""
        if not self.relocated:
            return f"cluster in {self.datadir}"
        return (f"cluster in {self.datadir} (the {SERVER_USER_WHEN_ROOT} user cannot reach {self.home}; "
                f"carrierpay finds it there through {self.state_file})")

    @property
    def relocated(self) -> bool:
        """True when the server's files live outside the home (see _server_dir)."""
        return self.server_dir != self.home

    def _prepare_server_dir(self) -> None:
        if not self.relocated:
            return
        RELOCATED_CLUSTERS.mkdir(parents=True, exist_ok=True)
        os.chmod(RELOCATED_CLUSTERS.parent, 0o755)
        os.chmod(RELOCATED_CLUSTERS, 0o755)
        self.server_dir.mkdir(exist_ok=True)
        os.chmod(self.server_dir, 0o755)
        if not self._server_user_can_reach(self.server_dir):
            raise ClusterError(
                f"the {SERVER_USER_WHEN_ROOT} user can reach neither {self.home} nor {self.server_dir}",
                hint="set CARRIERPAY_HOME to a directory under /var/tmp or /srv",
            )

    # -- state ------------------------------------------------------------------------------
    def _read_state(self) -> dict:
        if self.state_file.exists():
            return json.loads(self.state_file.read_text())
        return {}

    def _write_state(self, **values) -> None:
        state = self._read_state() | values
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")

    def _preferred_port(self) -> int:
        # Stable per data directory so restarts keep their URL, spread to avoid clashes.
        digest = hashlib.sha256(str(self.datadir).encode()).digest()
        return 54000 + int.from_bytes(digest[:2], "big") % 5000

    def _choose_port(self) -> int:
        wanted = self._read_state().get("port") or self._preferred_port()
        for port in range(wanted, wanted + 200):
            if port_is_free(port):
                return port
        raise ClusterError(f"no free TCP port between {wanted} and {wanted + 199}")

    @property
    def port(self) -> int | None:
        return self._read_state().get("port")

    @property
    def password(self) -> str | None:
        """The superuser's password; None for a cluster made before passwords (trust authentication)."""
        try:
            return self.password_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def url(self, dbname: str) -> str:
        if self.port is None:
            raise ClusterError("the embedded cluster has never been started", hint="run: carrierpay db up")
        credentials = SUPERUSER if self.password is None else f"{SUPERUSER}:{quote(self.password, safe='')}"
        return f"postgresql://{credentials}@127.0.0.1:{self.port}/{dbname}"

    # -- lifecycle --------------------------------------------------------------------------
    def is_initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def _validate_existing_datadir(self) -> None:
        version_file = self.datadir / "PG_VERSION"
        if version_file.exists():
            found = version_file.read_text().strip()
            if found != str(SUPPORTED_MAJOR):
                raise ClusterError(
                    f"{self.datadir} holds a PostgreSQL {found} cluster; carrierpay runs PostgreSQL "
                    f"{SUPPORTED_MAJOR}. Nothing was changed.",
                    hint="point CARRIERPAY_HOME elsewhere, or upgrade that cluster with pg_upgrade",
                )
            if not (self.datadir / "global" / "pg_control").exists():
                raise ClusterError(
                    f"{self.datadir} is damaged (global/pg_control is missing). Nothing was deleted.",
                    hint="restore it from a backup, or move it aside and run db up again",
                )
        elif self.datadir.exists() and any(self.datadir.iterdir()):
            raise ClusterError(
                f"{self.datadir} is not empty but holds no PostgreSQL cluster (no PG_VERSION). "
                "Nothing was deleted.",
                hint="move it aside or set CARRIERPAY_HOME to another directory",
            )

    def init(self) -> bool:
        """Create the cluster if it does not exist yet. Returns True when it was created."""
        self._validate_existing_datadir()
        if self.is_initialized():
            return False
        self.home.mkdir(parents=True, exist_ok=True)
        if self.relocated:
            self._prepare_server_dir()
            self._write_state(server_dir=str(self.server_dir))
        else:
            os.chmod(self.home, 0o755)
        for directory in (self.datadir, self.socket_dir):
            directory.mkdir(exist_ok=True)
        os.chmod(self.datadir, 0o700)
        self.logfile.touch()
        self._hand_to_server_user(self.datadir, self.socket_dir, self.logfile)
        # Every connection, TCP or socket, authenticates with SCRAM: any local user can reach the
        # port, and merchant roles log in with passwords of their own.
        password = secrets.token_urlsafe(24)
        self.password_file.touch(mode=0o600)
        self.password_file.write_text(password + "\n")
        pwfile = self.socket_dir / "initdb.pwfile"
        pwfile.touch(mode=0o600)
        pwfile.write_text(password + "\n")
        self._hand_to_server_user(pwfile)
        try:
            self._run(
                "initdb",
                "-D", str(self.datadir),
                "-U", SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "200",
            "shared_buffers": "'256MB'",
            "shared_preload_libraries": "'pg_stat_statements'",
            "timezone": "'UTC'",
            "log_min_messages": "warning",
        }
        if self.fast:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        settings |= self.extra_settings
        conf = self.datadir / "postgresql.auto.conf"
        lines = [f"{key} = {value}\n" for key, value in settings.items()]
        self._append_as_server_user(conf, "".join(lines))
        return True

    def _append_as_server_user(self, path: Path, text: str) -> None:
        if self.as_root:
            subprocess.run(
                ["runuser", "-u", SERVER_USER_WHEN_ROOT, "--", "tee", "-a", str(path)],
                input=text, text=True, capture_output=True, check=True,
            )
        else:
            with path.open("a") as handle:
                handle.write(text)

    def status(self) -> ClusterStatus:
        pid = None
        running = False
        if self.is_initialized():
            result = self._run("pg_ctl", "status", "-D", str(self.datadir), check=False)
            running = result.returncode == 0
            pid_file = self.datadir / "postmaster.pid"
            if running and pid_file.exists():
                pid = int(pid_file.read_text().split()[0])
        return ClusterStatus(running=running, datadir=self.datadir, port=self.port, pid=pid)

    def start(self) -> bool:
        """Start the server. Returns False when it was already running."""
        self._validate_existing_datadir()
        if not self.is_initialized():
            raise ClusterError("the embedded cluster does not exist yet", hint="run: carrierpay db up")
        if self.status().running:
            return False
        port = self._choose_port()
        result = self._run(
            "pg_ctl", "start", "-w", "-t", "60",
            "-D", str(self.datadir),
            "-l", str(self.logfile),
            "-o", f"-p {port}",
            check=False,
        )
        if result.returncode != 0:
            raise ClusterError(
                f"PostgreSQL did not start: {self._log_tail()}",
                hint=f"the full log is {self.logfile}",
            )
        self._write_state(port=port, datadir=str(self.datadir))
        return True

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.logfile.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> bool:
        """Stop the server. Returns False when it was not running."""
        if not self.is_initialized() or not self.status().running:
            return False
        self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.datadir))
        return True

    def ensure_database(self, dbname: str) -> bool:
        """Create the database (and the extensions available on this server). True when created."""
        from sqlalchemy_utils import create_database, database_exists

        sa_url = self.url(dbname).replace("postgresql://", "postgresql+psycopg://", 1)
        created = False
        if not database_exists(sa_url):
            create_database(sa_url, encoding="utf8", template="template0")
            created = True
        create_available_extensions(self.url(dbname))
        return created


WANTED_EXTENSIONS = ("pgcrypto", "plpgsql_check", "pg_stat_statements")


def create_available_extensions(url: str, wanted: tuple[str, ...] = WANTED_EXTENSIONS) -> list[str]:
    """Create each wanted extension this server offers; returns those now present."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        available = {
            row[0]
            for row in conn.execute(
                "select name from pg_available_extensions where name = any(%s)", [list(wanted)]
            )
        }
        for name in wanted:
            if name in available:
                conn.execute(f'create extension if not exists "{name}"')
        return [name for name in wanted if name in available]
