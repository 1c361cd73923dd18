"""`carrierpay merchant …`: onboard the companies that sell through carrierpay."""

from __future__ import annotations

import typer

from carrierpay import config, queries
from carrierpay.cli.common import DatabaseUrlOption, FormatOption, call_sql, print_document, print_rows, user_errors

app = typer.Typer(
    help=(
        "Merchants: their database role (which may act only for them) and webhook secret.\n\n"
        "Examples:\n\n"
        "  carrierpay merchant add acme 'Acme Games' --webhook-url https://acme.example/hooks --fee-bp 1000\n\n"
        "  carrierpay merchant rotate-secret acme\n\n"
        "  carrierpay merchant rotate-password acme"
    ),
    no_args_is_help=True,
)


@app.command()
@user_errors
def add(
    code: str = typer.Argument(..., help="Short code: lowercase letters, digits, _"),
    name: str = typer.Argument(..., help="Display name"),
    webhook_url: str | None = typer.Option(None, help="Where signed notifications are posted (https)"),
    fee_bp: int = typer.Option(0, "--fee-bp", help="Platform fee in basis points of the net amount"),
    allow_http: bool = typer.Option(
        False, "--allow-http",
        help="Accept a plain http webhook URL (local receivers; or $CARRIERPAY_WEBHOOK_ALLOW_HTTP=1)"),
    database_url: str | None = DatabaseUrlOption,
) -> None:
    """Create a merchant and its database role; prints the role's password and the webhook secret once."""
    before = (queries.ALLOW_HTTP_WEBHOOK_URLS,) if config.webhook_allow_http(allow_http) else ()
    rows = call_sql(database_url, queries.ADD_MERCHANT,
                    {"code": code, "name": name, "webhook_url": webhook_url, "platform_fee_bp": fee_bp},
                    before=before)
    print_document(rows[0][0])


@app.command("list")
@user_errors
def list_(fmt: str = FormatOption, database_url: str | None = DatabaseUrlOption) -> None:
    """List merchants."""
    rows = call_sql(database_url, queries.LIST_MERCHANTS)
    print_rows(["code", "name", "db_role", "webhook_url", "fee_bp", "created_at"], rows, fmt)


@app.command("rotate-secret")
@user_errors
def rotate_secret(code: str, database_url: str | None = DatabaseUrlOption) -> None:
    """Issue a new webhook signing secret (the old one stops working at once)."""
    print_document(call_sql(database_url, queries.ROTATE_MERCHANT_SECRET, {"code": code})[0][0])


@app.command("rotate-password")
@user_errors
def rotate_password(code: str, database_url: str | None = DatabaseUrlOption) -> None:
    """Issue a new password for the merchant's database role (shown once; the old one stops working at once)."""
    print_document(call_sql(database_url, queries.ROTATE_MERCHANT_PASSWORD, {"code": code})[0][0])


client_app = typer.Typer(
    help=(
        "API clients of the merchant HTTP API (OAuth2 client credentials; `carrierpay api serve`).\n\n"
        "Examples:\n\n"
        "  carrierpay merchant client add acme --scope carrier-billing:payments:create "
        "--scope carrier-billing:payments:read --default-product gems\n\n"
        "  carrierpay merchant client list --merchant acme\n\n"
        "  carrierpay merchant client limit cpc_0123456789abcdef01 50\n\n"
        "  carrierpay merchant client revoke cpc_0123456789abcdef01"
    ),
    no_args_is_help=True,
)
app.add_typer(client_app, name="client")


@client_app.command("add")
@user_errors
def client_add(
    merchant: str = typer.Argument(..., help="Merchant code"),
    scope: list[str] | None = typer.Option(
        None, "--scope", help="A scope the client may ask for (repeatable; default: every scope)"),
    default_product: str | None = typer.Option(
        None, "--default-product", help="Product charged when a payment names none (chargingMetaData.productId)"),
    database_url: str | None = DatabaseUrlOption,
) -> None:
    """Issue an API client for a merchant; prints its client id and secret (the secret is shown only now)."""
    rows = call_sql(database_url, queries.ADD_API_CLIENT,
                    {"merchant": merchant, "scopes": scope or None, "default_product": default_product})
    print_document(rows[0][0])


@client_app.command("limit")
@user_errors
def client_limit(
    client_id: str = typer.Argument(..., help="API client id, as merchant client add printed it"),
    requests_per_second: int | None = typer.Argument(
        None, help="Requests a second (1-100000); none: the server default"),
    database_url: str | None = DatabaseUrlOption,
) -> None:
    """Set an API client's request limit; over it the HTTP API answers 429 with Retry-After."""
    print_document(call_sql(database_url, queries.SET_API_CLIENT_RATE_LIMIT,
                            {"client_id": client_id, "requests_per_second": requests_per_second})[0][0])


@client_app.command("list")
@user_errors
def client_list(
    merchant: str | None = typer.Option(None, "--merchant", help="Only this merchant's clients"),
    fmt: str = FormatOption,
    database_url: str | None = DatabaseUrlOption,
) -> None:
    """List API clients (never their secrets) and how many live tokens each holds."""
    rows = call_sql(database_url, queries.LIST_API_CLIENTS, {"merchant": merchant})
    print_rows(["client_id", "merchant", "scopes", "default_product", "created_at", "revoked_at", "live_tokens"],
               rows, fmt, wrap=("scopes",))


@client_app.command("revoke")
@user_errors
def client_revoke(client_id: str, database_url: str | None = DatabaseUrlOption) -> None:
    """Revoke an API client: its secret and every token it holds stop working at once."""
    print_document(call_sql(database_url, queries.REVOKE_API_CLIENT, {"client_id": client_id})[0][0])
