"""`carrierpay report …`: the DBA views of the report schema, as tables, CSV or JSON."""

from __future__ import annotations

import psycopg
import typer

from carrierpay import db, queries
from carrierpay.cli.common import (
    DatabaseUrlOption,
    FormatOption,
    as_records,
    console,
    fail,
    print_json,
    print_rows,
    user_errors,
)

VIEW_NAMES = ", ".join(queries.REPORT_VIEWS)


def report(
    view: str = typer.Argument("success", help=f"One of: {VIEW_NAMES}, or 'all'"),
    fmt: str = FormatOption,
    database_url: str | None = DatabaseUrlOption,
) -> None:
    """Show a report view (revenue, success by carrier or local hour, retries, churn, refunds, open calls ...).

    Examples: carrierpay report revenue; carrierpay report calls --format json
    """
    run_report(view, fmt, database_url)


@user_errors
def run_report(view: str, fmt: str, database_url: str | None) -> None:
    if fmt not in ("table", "csv", "json"):
        fail(f"unknown format {fmt!r}", hint="use table, csv or json")
    names = list(queries.REPORT_VIEWS) if view == "all" else [view]
    for name in names:
        if name not in queries.REPORT_VIEWS:
            fail(f"unknown report {name!r}", hint=f"choose one of: {VIEW_NAMES}")
    if fmt == "csv" and len(names) > 1:
        fail("csv holds one report at a time", hint="name the report, or use --format json for all of them")
    every = {}
    with psycopg.connect(db.running_url(database_url), autocommit=True) as conn:
        conn.execute(queries.READ_WITHOUT_JIT)
        for n, name in enumerate(names):
            cur = conn.execute(queries.report_view(name))
            columns, rows = [c.name for c in cur.description], cur.fetchall()
            if fmt == "json" and len(names) > 1:
                every[name] = as_records(columns, rows)  # one document: {"revenue": [...], ...}
                continue
            if n:
                console.print()
            print_rows(columns, rows, fmt, title=queries.REPORT_VIEWS[name])
    if every:
        print_json(every)
