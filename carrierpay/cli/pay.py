"""`carrierpay pay …`: thin wrappers over the api.* functions, for operators and scripts."""

from __future__ import annotations

import json
import uuid

import typer

from carrierpay import queries
from carrierpay.cli.common import DatabaseUrlOption, call_sql, fail, print_document, user_errors
from carrierpay.parsing import load_json

app = typer.Typer(
    help=(
        "Payments through the merchant SQL API (api.*). Each command prints the jsonb document.\n\n"
        "Examples:\n\n"
        "  carrierpay pay charge acme +447700900123 gems --key order-1\n\n"
        "  carrierpay pay subscribe acme +2348020000001 club daily\n\n"
        "  carrierpay pay confirm acme 42 1234\n\n"
        "  carrierpay pay refund acme 17 --amount 100\n\n"
        "  carrierpay pay show acme 17"
    ),
    no_args_is_help=True,
)

KeyOption = typer.Option(None, "--key", help="Idempotency key (default: a new random one)")


def _json_kind(value) -> str:
    for kind, name in ((bool, "true/false"), (list, "an array"), (str, "a string"), (int | float, "a number")):
        if isinstance(value, kind):
            return name
    return "null"


def _key(key: str | None) -> str:
    return key or uuid.uuid4().hex


@app.command()
@user_errors
def charge(merchant: str, msisdn: str, product: str, key: str | None = KeyOption,
           amount: int | None = typer.Option(None, help="A price point in minor units (default: the product's)"),
           metadata: str = typer.Option("{}", help="JSON object stored with the payment, e.g. optin_id"),
           database_url: str | None = DatabaseUrlOption) -> None:
    """One-time purchase."""
    try:
        document = load_json(metadata, "--metadata")
    except ValueError as exc:
        fail(str(exc))
    if not isinstance(document, dict):
        fail(f"--metadata: a JSON object is needed, e.g. '{{\"optin_id\": 7}}', not {_json_kind(document)}")
    print_document(call_sql(database_url, queries.API_CHARGE, {
        "merchant": merchant, "msisdn": msisdn, "product": product, "key": _key(key), "amount": amount,
        "metadata": json.dumps(document)})[0][0])


@app.command()
@user_errors
def subscribe(merchant: str, msisdn: str, product: str, plan: str, key: str | None = KeyOption,
              database_url: str | None = DatabaseUrlOption) -> None:
    """Start a subscription (daily, weekly, monthly); prints the opt-in id when a PIN was sent."""
    print_document(call_sql(database_url, queries.API_SUBSCRIBE, {
        "merchant": merchant, "msisdn": msisdn, "product": product, "plan": plan, "key": _key(key)})[0][0])


@app.command()
@user_errors
def confirm(merchant: str, optin_id: int, pin: str, database_url: str | None = DatabaseUrlOption) -> None:
    """Confirm an opt-in with the PIN the subscriber received."""
    print_document(call_sql(database_url, queries.API_CONFIRM_OPTIN,
                            {"merchant": merchant, "optin_id": optin_id, "pin": pin})[0][0])


@app.command()
@user_errors
def refund(merchant: str, payment_id: int, key: str | None = KeyOption,
           amount: int | None = typer.Option(None, help="Minor units (default: all that is refundable)"),
           reason: str | None = typer.Option(None), database_url: str | None = DatabaseUrlOption) -> None:
    """Refund a collected payment, fully or partly."""
    print_document(call_sql(database_url, queries.API_REFUND, {
        "merchant": merchant, "payment_id": payment_id, "key": _key(key), "amount": amount, "reason": reason})[0][0])


@app.command()
@user_errors
def cancel(merchant: str, subscription_id: int, reason: str | None = typer.Option(None),
           database_url: str | None = DatabaseUrlOption) -> None:
    """Cancel a subscription now."""
    print_document(call_sql(database_url, queries.API_CANCEL, {
        "merchant": merchant, "subscription_id": subscription_id, "reason": reason})[0][0])


@app.command()
@user_errors
def show(merchant: str, payment_id: int, database_url: str | None = DatabaseUrlOption) -> None:
    """A payment with its attempts, refunds and history."""
    print_document(call_sql(database_url, queries.API_PAYMENT, {"merchant": merchant, "payment_id": payment_id})[0][0])


@app.command()
@user_errors
def subscription(merchant: str, subscription_id: int, database_url: str | None = DatabaseUrlOption) -> None:
    """A subscription with its charges and history."""
    print_document(call_sql(database_url, queries.API_SUBSCRIPTION,
                            {"merchant": merchant, "subscription_id": subscription_id})[0][0])
