"""What every command group shares: the console, options and turning errors into one-line messages."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import psycopg
import sqlalchemy.exc
import typer
from rich.console import Console

from carrierpay.embedded import ClusterError
from carrierpay.migrate import MigrationError

console = Console()
err_console = Console(stderr=True)

DatabaseUrlOption = typer.Option(
    None,
    "--database-url",
    envvar="CARRIERPAY_DATABASE_URL",
    help="Use this existing PostgreSQL server instead of the embedded cluster.",
    show_envvar=True,
)

state = {"verbose": False}


def fail(message: str, hint: str | None = None, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    if hint:
        err_console.print(f"[dim]hint:[/] {hint}")
    raise typer.Exit(code)


def user_errors(func: Callable) -> Callable:
    """Report known failures as one line and a hint (a traceback only with --verbose)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (ClusterError, MigrationError, psycopg.Error, sqlalchemy.exc.DBAPIError) as exc:
            if state["verbose"]:
                err_console.print_exception()
            if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
                exc = exc.orig
            hint = getattr(exc, "hint", None)
            if isinstance(exc, psycopg.OperationalError) and hint is None:
                hint = "is the database running? try: carrierpay db status"
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            fail(message, hint)

    return wrapper


def is_tty() -> bool:
    return sys.stdout.isatty()
