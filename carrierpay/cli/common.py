"""What every command group shares: the console, options and turning errors into one-line messages."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import psycopg
import typer
from rich.console import Console

from carrierpay import db, errors
from carrierpay.embedded import ClusterError, hint_for_server_error
from carrierpay.errors import MigrationError

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


def _sqlalchemy_errors() -> tuple[type[Exception], ...]:
    """SQLAlchemy's DBAPIError, only if a command already imported it (it is slow to import)."""
    module = sys.modules.get("sqlalchemy.exc")
    return (module.DBAPIError,) if module else ()


def fail(message: str, hint: str | None = None, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    if hint:
        err_console.print(f"[dim]hint:[/] {hint}")
    raise typer.Exit(code)


# What a query on a database that was never migrated raises.
NOT_MIGRATED = (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction, psycopg.errors.InvalidSchemaName)


def user_errors(func: Callable) -> Callable:
    """Report known failures as one line and a hint (a traceback only with --verbose)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except errors.CarrierpayError as exc:
            fail(f"{exc.code}: {exc}", hint="error codes are listed in docs/sql-api.md")
        except (ClusterError, MigrationError, psycopg.Error, *_sqlalchemy_errors()) as exc:
            if state["verbose"]:
                err_console.print_exception()
            if getattr(exc, "orig", None) is not None:  # SQLAlchemy wraps the driver's error
                exc = exc.orig
            hint = getattr(exc, "hint", None) or hint_for_server_error(str(exc))
            if isinstance(exc, psycopg.OperationalError) and hint is None:
                hint = "is the database running? try: carrierpay db status"
            if isinstance(exc, NOT_MIGRATED) and hint is None:
                hint = ("this database has no carrierpay schema yet: run `carrierpay db migrate`, or point "
                        "--database-url / CARRIERPAY_DATABASE_URL at a migrated one (the demo's is carrierpay_demo)")
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            fail(message, hint)

    return wrapper


def is_tty() -> bool:
    return sys.stdout.isatty()


def call_sql(database_url: str | None, query: str, params: dict | list | None = None,
             before: tuple[str, ...] = ()) -> list[tuple]:
    """Run one named query on the running database (after the named queries `before`, on the same
    session); our SQLSTATEs become CarrierpayError."""
    url = db.running_url(database_url)
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            for setup in before:
                conn.execute(setup)
            return conn.execute(query, params).fetchall()
        except psycopg.Error as exc:
            translated = errors.translate(exc)
            if translated is exc:
                raise
            raise translated from exc


def print_document(document: dict) -> None:
    """A jsonb result of the SQL API, as pretty JSON."""
    console.print_json(data=document)


def print_rows(columns: list[str], rows: list[tuple], fmt: str = "table", title: str | None = None) -> None:
    """Rows as a rich table, or CSV / JSON for scripts."""
    import csv
    import json

    if fmt == "json":
        typer.echo(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=str, indent=2))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        from rich.table import Table

        table = Table(title=title)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*["" if value is None else str(value) for value in row])
        console.print(table)
