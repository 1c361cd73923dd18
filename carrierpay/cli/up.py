"""`carrierpay up`: run every daemon of a deployment in one supervised process group (carrierpay/supervisor.py)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import typer

from carrierpay.cli.common import DatabaseUrlOption, console, fail, user_errors
from carrierpay.logmask import configure_logging


@user_errors
def up(
    config_file: Path | None = typer.Option(None, "--config", "-f", envvar="CARRIERPAY_CONFIG", show_envvar=True,
                                            help="YAML configuration (default ./carrierpay.yaml if present)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the daemons that would run, and exit."),
    database_url: str | None = DatabaseUrlOption,
) -> None:
    """Run the adapters, reconciler, callback server, scheduler, webhook dispatcher and history shipper
    as child processes; restart a child that dies (with back-off); SIGTERM or Ctrl-C stops them all.

    Without a configuration file every daemon runs once with its defaults. See `carrierpay.supervisor`
    for the file's keys; e.g. `daemons: {adapters: {copies: 4}, callbacks: {port: 8443}}`.
    """
    from carrierpay import config, db
    from carrierpay.supervisor import ConfigError, Supervisor, load_config

    try:
        settings = load_config(config_file, database_url=database_url)
    except ConfigError as exc:
        fail(str(exc), hint="see `carrierpay up --help`")
    if dry_run:
        for child in settings.children:
            console.print(f"{child.name}: carrierpay {' '.join([*child.args, *child.metrics])}")
        return
    configure_logging(logging.INFO)
    where = db.target(settings.database_url)
    if where.embedded is not None:
        cluster = where.embedded
        if not cluster.is_initialized():
            fail("the embedded PostgreSQL does not exist yet", hint="run: carrierpay db up && carrierpay db migrate")
        if cluster.start():
            console.print(f"started the embedded PostgreSQL on port {cluster.port}")
    home = config.home()
    home.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(settings, state_file=home / "up.json")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: supervisor.stop.set())
    raise typer.Exit(supervisor.run())
