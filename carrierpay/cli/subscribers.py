"""`carrierpay subscriber …`: look up an end user by MSISDN."""

from __future__ import annotations

import typer

from carrierpay import queries
from carrierpay.cli.common import DatabaseUrlOption, FormatOption, call_sql, fail, print_rows, user_errors

app = typer.Typer(
    help="Subscribers (end users, by MSISDN).\n\nExamples:\n\n  carrierpay subscriber show +447700900123\n\n"
         "  carrierpay subscriber history +447700900123",
    no_args_is_help=True,
)


@app.command()
@user_errors
def show(msisdn: str, fmt: str = FormatOption, database_url: str | None = DatabaseUrlOption) -> None:
    """Carrier, timezone, live subscriptions and spend of a subscriber."""
    rows = call_sql(database_url, queries.SUBSCRIBER_SHOW, {"msisdn": msisdn})
    if not rows:
        fail(f"no subscriber {msisdn}", hint="numbers are E.164, e.g. +447700900123")
    print_rows(["id", "msisdn", "carrier", "timezone", "since", "live_subscriptions", "charges", "net_paid_minor"],
               rows, fmt)


@app.command()
@user_errors
def history(msisdn: str, fmt: str = FormatOption, database_url: str | None = DatabaseUrlOption) -> None:
    """Every procedure (charges, refunds, balance checks, SMS) of a subscriber, oldest first."""
    rows = call_sql(database_url, queries.SUBSCRIBER_HISTORY, {"msisdn": msisdn})
    print_rows(["at", "kind", "id", "status", "amount_minor", "currency", "merchant", "reason"], rows, fmt,
               wrap=("reason",))
