"""Operator pauses and circuit breakers: `carrier|merchant|product pause|resume`, `carrier breaker`.

A pause holds the queued calls of a carrier, a merchant or a product (payments are still taken and
wait in the queue); resuming sends them. The rules live in db/procedures/130_breaker.sql.
"""

from __future__ import annotations

import typer
from psycopg.types.json import Jsonb

from carrierpay import queries
from carrierpay.cli.common import DatabaseUrlOption, FormatOption, call_sql, console, print_rows, user_errors

ReasonOption = typer.Option("", "--reason", help="Why (shown in report.sending_pauses).")


def pause(scope: str, code: str, reason: str, database_url: str | None) -> None:
    new = call_sql(database_url, queries.PAUSE_SENDING, {"scope": scope, "code": code, "reason": reason})[0][0]
    console.print(f"{scope} {code}: sending paused" + ("" if new else " (it already was)"), markup=False)


def resume(scope: str, code: str, database_url: str | None) -> None:
    was = call_sql(database_url, queries.RESUME_SENDING, {"scope": scope, "code": code})[0][0]
    console.print(f"{scope} {code}: " + ("sending resumed" if was else "was not paused"), markup=False)


def register_pause_commands(group: typer.Typer, scope: str, pause_help: str, resume_help: str) -> None:
    """`<scope> pause CODE` and `<scope> resume CODE`, for the scopes a single code names."""

    @group.command("pause", help=pause_help)
    @user_errors
    def pause_command(code: str, reason: str = ReasonOption, database_url: str | None = DatabaseUrlOption) -> None:
        pause(scope, code, reason, database_url)

    @group.command("resume", help=resume_help)
    @user_errors
    def resume_command(code: str, database_url: str | None = DatabaseUrlOption) -> None:
        resume(scope, code, database_url)


def register(carrier_app: typer.Typer, merchant_app: typer.Typer, product_app: typer.Typer) -> None:
    """Add the pause, resume and breaker commands to their groups."""

    register_pause_commands(
        carrier_app, "carrier",
        "Hold every queued call of a carrier until `carrier resume` (payments are still taken).",
        "Send a paused carrier's calls again.")
    register_pause_commands(
        merchant_app, "merchant",
        "Hold every queued call of a merchant, on every carrier, until `merchant resume`.",
        "Send a paused merchant's calls again.")

    @product_app.command("pause")
    @user_errors
    def product_pause(merchant: str, product: str, reason: str = ReasonOption,
                      database_url: str | None = DatabaseUrlOption) -> None:
        """Hold every queued call of one product until `product resume`."""
        pause("product", f"{merchant}/{product}", reason, database_url)

    @product_app.command("resume")
    @user_errors
    def product_resume(merchant: str, product: str, database_url: str | None = DatabaseUrlOption) -> None:
        """Send a paused product's calls again."""
        resume("product", f"{merchant}/{product}", database_url)

    @carrier_app.command("breaker")
    @user_errors
    def carrier_breaker(
        code: str | None = typer.Argument(None, help="Set this carrier's thresholds (else: list every breaker)."),
        error_pct: int | None = typer.Option(None, "--error-pct", help="Trip at this share of errors (1-100)."),
        min_calls: int | None = typer.Option(None, "--min-calls", help="...among at least this many recent calls."),
        window: int | None = typer.Option(None, "--window", metavar="SECS", help="Recent: created this long ago."),
        probe_interval: int | None = typer.Option(None, "--probe-interval", metavar="SECS",
                                                  help="While open, one probe call this often."),
        reset_after: int | None = typer.Option(None, "--reset-after", help="Healthy probes in a row that close it."),
        fmt: str = FormatOption,
        database_url: str | None = DatabaseUrlOption,
    ) -> None:
        """Circuit breakers: state, trips and thresholds of every carrier; with a carrier code and options,
        set its thresholds."""
        settings = {key: value for key, value in (("error_pct", error_pct), ("min_calls", min_calls),
                                                  ("window_s", window), ("probe_interval_s", probe_interval),
                                                  ("reset_after", reset_after)) if value is not None}
        if code is not None and settings:
            call_sql(database_url, queries.SET_BREAKER, {"carrier": code, "settings": Jsonb(settings)})
        rows = call_sql(database_url, queries.CARRIER_BREAKERS)
        if code is not None:
            rows = [row for row in rows if row[0] == code]
        print_rows(["carrier", "state", "paused", "trips", "since", "reason", "error_pct", "min_calls", "window_s",
                    "probe_interval_s", "reset_after"], rows, fmt, wrap=("reason",))
