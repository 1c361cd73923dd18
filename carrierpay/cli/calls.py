"""`carrierpay calls …`: carrier calls whose outcome no reconciliation route could establish, and the
operator's command to record it (admin.settle_call, audited)."""

from __future__ import annotations

import psycopg
import typer

from carrierpay import db, queries
from carrierpay.cli.common import DatabaseUrlOption, call_sql, fail, print_document, print_rows, user_errors

app = typer.Typer(
    help=(
        "Carrier calls that need an operator: unknown or awaited after three reconciliation turns "
        "(5 minutes, 1 hour, 1 day).\n\n"
        "Examples:\n\n"
        "  carrierpay calls unsettled\n\n"
        "  carrierpay calls settle 4711 succeeded --reason 'carrier portal shows refund RF-88 done'"
    ),
    no_args_is_help=True,
)


@app.command()
@user_errors
def unsettled(fmt: str = typer.Option("table", "--format", help="table, csv or json"),
              database_url: str | None = DatabaseUrlOption) -> None:
    """List the calls an operator has to settle (report.calls_needing_operator)."""
    if fmt not in ("table", "csv", "json"):
        fail(f"unknown format {fmt!r}", hint="use table, csv or json")
    with psycopg.connect(db.running_url(database_url), autocommit=True) as conn:
        cur = conn.execute(queries.CALLS_NEEDING_OPERATOR)
        print_rows([c.name for c in cur.description], cur.fetchall(), fmt, title="report.calls_needing_operator")


@app.command()
@user_errors
def settle(call_id: int, outcome: str = typer.Argument(..., help="succeeded or failed"),
           reason: str = typer.Option(..., "--reason", help="How the outcome was established (kept for audit)"),
           database_url: str | None = DatabaseUrlOption) -> None:
    """Record what the carrier says happened to an unknown or awaited call; the payment or refund and
    the ledger follow, as for a carrier's answer."""
    print_document(call_sql(database_url, queries.SETTLE_CALL,
                            {"call_id": call_id, "outcome": outcome, "reason": reason})[0][0])
