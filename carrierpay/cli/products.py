"""`carrierpay product …`: what merchants sell and what it costs on each carrier."""

from __future__ import annotations

import typer

from carrierpay import queries
from carrierpay.cli.common import DatabaseUrlOption, FormatOption, call_sql, print_document, print_rows, user_errors

app = typer.Typer(
    help=(
        "Products and their price points (per carrier or country, per plan, each mapped to a variant).\n\n"
        "Examples:\n\n"
        "  carrierpay product add acme gems '100 gems'\n\n"
        "  carrierpay product price acme gems one_time 300 GBP gems_100 --carrier oneapi_gb\n\n"
        "  carrierpay product prices acme"
    ),
    no_args_is_help=True,
)


@app.command()
@user_errors
def add(
    merchant: str,
    code: str,
    name: str,
    retry_policy: str = typer.Option("step_down", help="On insufficient funds: step_down, accumulate or defer"),
    retry_timing: str = typer.Option("best_hour", help="When to retry: best_hour, fixed or subscriber"),
    database_url: str | None = DatabaseUrlOption,
) -> None:
    """Create a product (or update its retry settings)."""
    print_document(call_sql(database_url, queries.ADD_PRODUCT, {
        "merchant": merchant, "code": code, "name": name, "retry_policy": retry_policy,
        "retry_timing": retry_timing})[0][0])


@app.command()
@user_errors
def price(
    merchant: str,
    product: str,
    plan: str = typer.Argument(..., help="one_time, daily, weekly or monthly"),
    amount_minor: int = typer.Argument(..., help="Price in minor units (pence, cents, kobo)"),
    currency: str = typer.Argument(..., help="ISO 4217 code"),
    variant: str = typer.Argument(..., help="What is delivered when this price is paid"),
    carrier: str | None = typer.Option(None, help="Carrier code (or give --country)"),
    country: str | None = typer.Option(None, help="Country code, for every carrier there"),
    database_url: str | None = DatabaseUrlOption,
) -> None:
    """Add a price point."""
    print_document(call_sql(database_url, queries.ADD_PRICE_POINT, {
        "merchant": merchant, "product": product, "plan": plan, "amount": amount_minor, "currency": currency,
        "variant": variant, "carrier": carrier, "country": country})[0][0])


@app.command()
@user_errors
def prices(merchant: str, product: str | None = typer.Argument(None), fmt: str = FormatOption,
           database_url: str | None = DatabaseUrlOption):
    """List a merchant's price points."""
    rows = call_sql(database_url, queries.LIST_PRICE_POINTS, {"merchant": merchant, "product": product})
    columns = ["merchant", "product", "carrier/country", "plan", "amount_minor", "currency", "variant", "active"]
    print_rows(columns, rows, fmt)
