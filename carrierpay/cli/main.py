"""Entry point of the `carrierpay` command."""

from __future__ import annotations

import inspect

import typer

from carrierpay.cli import bench as bench_cmd
from carrierpay.cli import calls as calls_cmd
from carrierpay.cli import carriers as carriers_cmd
from carrierpay.cli import daemons as daemons_cmd
from carrierpay.cli import dashboard as dashboard_cmd
from carrierpay.cli import db as db_cmd
from carrierpay.cli import demo as demo_cmd
from carrierpay.cli import history, merchants, pauses, pay, products, report, shards, subscribers, webhooks
from carrierpay.cli import up as up_cmd
from carrierpay.cli.common import state

app = typer.Typer(
    help="carrierpay: direct carrier billing on PostgreSQL. Start with `carrierpay db up`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
for name, group in {
    "db": db_cmd.app,
    "carrier": carriers_cmd.app,
    "merchant": merchants.app,
    "product": products.app,
    "subscriber": subscribers.app,
    "pay": pay.app,
    "webhooks": webhooks.app,
    "calls": calls_cmd.app,
    "history": history.app,
    "shards": shards.app,
    "adapters": daemons_cmd.adapters_app,
    "reconcile": daemons_cmd.reconcile_app,
    "callbacks": daemons_cmd.callbacks_app,
    "scheduler": daemons_cmd.scheduler_app,
    "api": daemons_cmd.api_app,
    "metrics": daemons_cmd.metrics_app,
}.items():
    app.add_typer(group, name=name)
for name, command in {
    "report": report.report,
    "bench": bench_cmd.bench,
    "demo": demo_cmd.demo,
    "up": up_cmd.up,
    "dashboard": dashboard_cmd.dashboard,
}.items():
    app.command(name)(command)
pauses.register(carriers_cmd.app, merchants.app, products.app)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show full error details.")) -> None:
    state["verbose"] = verbose


def tidy_help(text: str | None) -> str | None:
    """Join the source lines of each prose paragraph: typer's rich help keeps single newlines, so a
    docstring wrapped at 120 columns would break its sentences mid-line on any terminal."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        paragraph if paragraph.startswith((" ", "\b")) or "\n " in paragraph  # examples keep their lines
        else " ".join(line.strip() for line in paragraph.splitlines())
        for paragraph in paragraphs)


def tidy_helps(typer_app: typer.Typer) -> None:
    """tidy_help over every command and group of an app (before typer turns them into click commands)."""
    if isinstance(typer_app.info.help, str):
        typer_app.info.help = tidy_help(typer_app.info.help)
    for info in typer_app.registered_commands:
        info.help = tidy_help(info.help if isinstance(info.help, str) else inspect.getdoc(info.callback))
    for group in typer_app.registered_groups:
        if isinstance(group.help, str):
            group.help = tidy_help(group.help)
        tidy_helps(group.typer_instance)


tidy_helps(app)


def run() -> None:
    app()
