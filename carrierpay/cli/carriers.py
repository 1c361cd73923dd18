"""`carrierpay carrier …`: onboard, check, list, show and disable carriers."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import psycopg
import typer
from psycopg.types.json import Jsonb
from rich.text import Text

from carrierpay import db, queries
from carrierpay.adapters.registry import build_connector
from carrierpay.adapters.spec import CarrierSpec, SpecError, load_spec
from carrierpay.cli.common import (
    DatabaseUrlOption,
    FormatOption,
    cell_text,
    console,
    err_console,
    fail,
    print_document,
    print_rows,
    user_errors,
)
from carrierpay.errors import translate

app = typer.Typer(
    help=(
        "Onboard and inspect carriers.\n\n"
        "Examples:\n\n"
        "  carrierpay carrier check carriers/oneapi_gb --base-url https://sandbox.example.net\n\n"
        "  carrierpay carrier onboard carriers/oneapi_gb\n\n"
        "  carrierpay carrier list"
    ),
    no_args_is_help=True,
)

SANDBOX_MSISDN_HELP = "Subscriber number for the sandbox calls (default: the first number range + zeros)."


def _load(path: str, base_url: str | None = None) -> CarrierSpec:
    try:
        return load_spec(Path(path) if Path(path).exists() else path, base_url=base_url)
    except SpecError as exc:
        if len(exc.errors) == 1:  # e.g. the file's YAML: where and what, on one line
            fail(f"invalid carrier spec {exc.source or path}: {exc.errors[0]}")
        err_console.print(f"[bold red]invalid carrier spec[/] {exc.source or path}:")
        for line in exc.errors:
            err_console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _admin(url: str, sql: str, params: dict[str, Any]) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            return conn.execute(sql, params).fetchone()[0]
        except psycopg.Error as exc:
            translated = translate(exc)
            if translated is exc:
                raise
            fail(f"{translated} ({translated.code})")


@app.command()
@user_errors
def onboard(path: str = typer.Argument(..., help="carriers/<code>, its carrier.yaml, or a carrier code."),
            database_url: str | None = DatabaseUrlOption) -> None:
    """Validate a spec and create or update the carrier from it."""
    spec = _load(path)
    document = spec.stored_document()  # TLS file names relative to the file made absolute
    if spec.base_url:
        document["base_url"] = spec.base_url  # CARRIERPAY_BASE_URL_<CODE> wins over the file
    answer = _admin(db.running_url(database_url), queries.ONBOARD_CARRIER, {"spec": Jsonb(document)})
    console.print(f"carrier [bold]{answer['code']}[/] {answer['status']} (id {answer['id']})")


def _sandbox_msisdn(spec: CarrierSpec) -> str:
    prefix = spec.data["number_ranges"][0]
    return prefix + "0" * max(1, 12 - len(prefix.lstrip("+")))


def _check_calls(spec: CarrierSpec, msisdn: str) -> list[dict[str, Any]]:
    """A read-only tour of the spec: balance, then a status query for a reference nobody used."""
    counter = itertools.count(1)
    base = {"carrier": spec.code, "attempt": 1, "msisdn": msisdn, "currency": spec.currency,
            "amount_minor": 100, "description": "carrierpay check", "product_code": "check",
            "merchant_code": "carrierpay"}
    calls = []
    for operation in ("balance", "status"):
        if operation not in spec.operations:
            continue
        n = next(counter)
        call = {**base, "call_id": n, "procedure_id": n, "operation": operation, "correlator": f"cp-check-{n}"}
        if operation == "status":
            call["original"] = {"correlator": "cp-check-never-sent", "carrier_ref": None, "amount_minor": 100}
        calls.append(call)
    return calls


async def _exercise(spec: CarrierSpec, msisdn: str) -> list[tuple[str, dict[str, Any]]]:
    connector = build_connector(spec)
    try:
        return [(call["operation"], await connector.execute(call)) for call in _check_calls(spec, msisdn)]
    finally:
        close = getattr(connector, "close", None)
        if close:
            await close()


def _passed(operation: str, result: dict[str, Any]) -> bool:
    """balance must succeed; a status query about a reference never sent must answer definitely."""
    if operation == "status":
        return result["outcome"] in ("succeeded", "failed") and result.get("reason") not in (
            "throttled", "transient", "unreachable", "unknown")
    return result["outcome"] == "succeeded"


@app.command()
def check(
    path: str = typer.Argument(..., help="carriers/<code>, its carrier.yaml, or a carrier code."),
    base_url: str | None = typer.Option(None, "--base-url", help="The sandbox to exercise (else the spec's)."),
    msisdn: str | None = typer.Option(None, "--msisdn", help=SANDBOX_MSISDN_HELP),
    offline: bool = typer.Option(False, "--offline", help="Only validate the spec; send nothing."),
) -> None:
    """Validate a spec, then exercise it against a sandbox (no money moves: a balance query and a
    status query for a reference never sent). Exits non-zero when anything fails."""
    spec = _load(path, base_url)
    console.print(f"spec [bold]{spec.code}[/] is valid: {', '.join(spec.operations)}")
    if offline:
        return
    try:
        results = asyncio.run(_exercise(spec, msisdn or _sandbox_msisdn(spec)))
    except NotImplementedError as exc:
        fail(str(exc))
    except Exception as exc:  # credentials missing, TLS files unreadable ...
        fail(f"{type(exc).__name__}: {exc}")
    rows = []
    ok = True
    for operation, result in results:
        passed = _passed(operation, result)
        ok &= passed
        verdict = Text("ok", style="green") if passed else Text.assemble(
            ("FAIL", "red"), " ", cell_text(result.get("carrier_message")))
        rows.append((operation, result["outcome"], result.get("reason"), result.get("carrier_code"),
                     (result.get("response") or {}).get("status"), result.get("latency_ms"), verdict))
    print_rows(["operation", "outcome", "reason", "carrier_code", "http", "ms", "check"], rows,
               title=f"{spec.code} at {spec.base_url}", wrap=("check",))
    if not results:
        console.print("nothing to exercise: the spec offers neither balance nor status")
    if not ok:
        raise typer.Exit(1)


@app.command("list")
@user_errors
def list_carriers(fmt: str = FormatOption, database_url: str | None = DatabaseUrlOption) -> None:
    """Every onboarded carrier, with its queue and unsettled calls."""
    with psycopg.connect(db.running_url(database_url), autocommit=True) as conn:
        rows = conn.execute(queries.LIST_CARRIERS).fetchall()
    print_rows(["code", "name", "country", "currency", "tps", "regulation", "enabled", "queued", "unsettled"], rows,
               fmt)


@app.command()
@user_errors
def show(code: str, database_url: str | None = DatabaseUrlOption,
         spec: bool = typer.Option(False, "--spec", help="Print the stored spec document too.")) -> None:
    """One carrier: identity, terms, rule overrides, calls by status."""
    with psycopg.connect(db.running_url(database_url), autocommit=True) as conn:
        cur = conn.execute(queries.SHOW_CARRIER, {"carrier": code})
        row = cur.fetchone()
        names = [d.name for d in cur.description]
    if row is None:
        fail(f"unknown carrier {code!r}", hint="carrierpay carrier list")
    data = dict(zip(names, row, strict=True))
    document = data.pop("spec")
    data["operations"] = ", ".join(document.get("operations") or {})
    data["base_url"] = document.get("base_url")
    print_rows(list(data), [tuple(data.values())], records=True)
    if spec:
        console.print_json(json.dumps(document))


@app.command()
@user_errors
def disable(code: str, database_url: str | None = DatabaseUrlOption) -> None:
    """Stop taking new payments on a carrier (calls in flight still settle)."""
    answer = _admin(db.running_url(database_url), queries.SET_CARRIER_ENABLED, {"carrier": code, "enabled": False})
    console.print(f"carrier [bold]{answer['code']}[/] {answer['status']}")


@app.command()
@user_errors
def enable(code: str, database_url: str | None = DatabaseUrlOption) -> None:
    """Take payments on a carrier again."""
    answer = _admin(db.running_url(database_url), queries.SET_CARRIER_ENABLED, {"carrier": code, "enabled": True})
    console.print(f"carrier [bold]{answer['code']}[/] {answer['status']}")


@app.command()
@user_errors
def lookup(
    code: str = typer.Argument(..., help="The carrier whose number lookup (HLR/MNP) to ask."),
    msisdn: str = typer.Argument(..., help="The number, E.164 (+447700900123)."),
    base_url: str | None = typer.Option(None, "--base-url", help="Where the carrier is (else the spec's)."),
    database_url: str | None = DatabaseUrlOption,
) -> None:
    """Ask a carrier which network serves a number now (a ported number keeps its old prefix) and record
    the answer: new purchases by that number are then billed by that network's carrier until the answer
    expires (the spec's operations.lookup.ttl_s)."""
    from carrierpay.adapters.lookup import LookupFailed, lookup_number

    try:
        recorded = asyncio.run(lookup_number(db.running_url(database_url), code, msisdn, base_url=base_url))
    except LookupFailed as exc:
        fail(str(exc), hint="see operations.lookup in docs/carrier-spec.md")
    print_document(recorded)
