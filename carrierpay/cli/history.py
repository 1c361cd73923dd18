"""`carrierpay history …`: ship the outboxes to the history store and read timelines back."""

from __future__ import annotations

import json
import signal
import threading
from datetime import timedelta

import typer

from carrierpay import db
from carrierpay.cli.common import (
    DatabaseUrlOption,
    MetricsHostOption,
    MetricsPortOption,
    console,
    err_console,
    fail,
    print_rows,
    user_errors,
)
from carrierpay.history import shipper as shipper_mod
from carrierpay.history.stores import StoreUnavailable, history_url, open_store, retention_days
from carrierpay.history.timeline import timeline

app = typer.Typer(
    help=(
        "Ship events and carrier logs to the history store, and read a payment's history.\n\n"
        "Examples:\n\n"
        "  carrierpay history ship            (runs until stopped)\n\n"
        "  carrierpay history ship --once     (drains what is there, then exits)\n\n"
        "  carrierpay history payment 42\n\n"
        "The store is CARRIERPAY_HISTORY_URL (postgresql://... or mongodb://...), by default the "
        "carrierpay_history database on the same server as the payment database."
    ),
    no_args_is_help=True,
)

HistoryUrlOption = typer.Option(
    None, "--history-url", envvar="CARRIERPAY_HISTORY_URL", show_envvar=True,
    help="History store: postgresql://... or mongodb://... (default: carrierpay_history next to the payment DB)",
)


def _urls(database_url: str | None, history: str | None) -> tuple[str, str]:
    main = db.running_url(database_url)
    return main, history_url(main, history)


@app.command()
@user_errors
def ship(
    once: bool = typer.Option(False, "--once", help="Drain what is in the outbox now, print the lag, exit."),
    batch_size: int = typer.Option(shipper_mod.DEFAULT_BATCH, "--batch-size", min=1, max=10000),
    interval: float = typer.Option(1.0, "--interval", min=0.05, help="Seconds between polls when idle."),
    name: str | None = typer.Option(None, "--name", help="Shipper name in report.history_shippers."),
    database_url: str | None = DatabaseUrlOption,
    history: str | None = HistoryUrlOption,
    metrics_port: int | None = MetricsPortOption,
    metrics_host: str = MetricsHostOption,
) -> None:
    """Move events and carrier logs from the outbox to the history store (several may run at once)."""
    main_url, store_url = _urls(database_url, history)
    worker = shipper_mod.Shipper(main_url, open_store(store_url), name=name, batch_size=batch_size)
    try:
        if once:
            try:
                result = worker.drain()
            except StoreUnavailable as exc:
                err_console.print(f"[bold red]error:[/] {exc}")
                err_console.print("[dim]hint:[/] nothing was lost: the outbox keeps every row until the store is back")
                print_lag(main_url)
                raise typer.Exit(1) from None
            console.print(f"shipped {result.events} event(s) and {result.logs} carrier log(s) "
                          f"in {result.batches} batch(es)")
            print_lag(main_url)
            return
        from carrierpay import metrics

        metrics.expose(metrics_port, metrics_host, daemon="history")
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())

        def report(result: shipper_mod.ShipResult) -> None:
            if result.documents:
                console.print(f"shipped {result.events} event(s), {result.logs} carrier log(s)")
            for error in result.errors:
                err_console.print(f"[yellow]store unavailable, will retry:[/] {error}")

        console.print(f"shipping as {worker.name}; Ctrl-C stops")
        worker.run(interval=interval, stop=stop, on_result=report)
    finally:
        worker.close()


@app.command("lag")
@user_errors
def lag_cmd(database_url: str | None = DatabaseUrlOption) -> None:
    """How far the history store is behind (report.history_lag)."""
    print_lag(db.running_url(database_url))


def print_lag(main_url: str) -> None:
    rows = [(row["outbox"], row["unshipped"], row["oldest_id"], _age(row["oldest_age"]), _when(row["last_shipped_at"]),
             row["last_error"]) for row in shipper_mod.lag(main_url)]
    print_rows(["outbox", "unshipped", "oldest_id", "oldest_age", "last_shipped", "last_error"], rows,
               title="history lag (report.history_lag)", wrap=("last_error",))


@app.command()
@user_errors
def retention(
    event_days: int | None = typer.Option(None, "--event-days", min=1, help="Days to keep events."),
    carrier_log_days: int | None = typer.Option(None, "--carrier-log-days", min=1,
                                                help="Days to keep carrier logs."),
    database_url: str | None = DatabaseUrlOption,
    history: str | None = HistoryUrlOption,
) -> None:
    """Remove history older than the retention period (never touches the unshipped outbox).

    The periods default to CARRIERPAY_HISTORY_RETENTION_EVENT_DAYS (else 400) and
    CARRIERPAY_HISTORY_RETENTION_CARRIER_LOG_DAYS (else 90).
    """
    days = retention_days()
    if event_days:
        days["event"] = event_days
    if carrier_log_days:
        days["carrier_log"] = carrier_log_days
    _, store_url = _urls(database_url, history)
    store = open_store(store_url)
    try:
        store.ensure_ready()
        removed = store.apply_retention(days)
    except StoreUnavailable as exc:
        fail(str(exc))
    finally:
        store.close()
    console.print(f"retention {days}: " + (", ".join(removed) if removed else "nothing to remove"))


def _show(aggregate_type: str, label: str, aggregate_id: int, database_url: str | None, history: str | None) -> None:
    _, store_url = _urls(database_url, history)
    store = open_store(store_url)
    try:
        store.ensure_ready()
        docs = timeline(store, aggregate_type, aggregate_id)
    except StoreUnavailable as exc:
        fail(str(exc))
    finally:
        store.close()
    if not docs:
        console.print(f"no history for {label} {aggregate_id} (not shipped yet? see: carrierpay history lag)")
        raise typer.Exit(1)
    rows = [(doc["recorded_at"].strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
             doc["occurred_at"].strftime("%Y-%m-%d %H:%M:%S") if doc["source"] == "event" else "",
             f"{doc['aggregate_type']} {doc['aggregate_id']}", _what(doc), _details(doc)) for doc in docs]
    print_rows(["recorded", "business_time", "aggregate", "what", "details"], rows,
               title=f"{label} {aggregate_id}: {len(docs)} record(s)", wrap=("details",))


@app.command()
@user_errors
def payment(payment_id: int, database_url: str | None = DatabaseUrlOption, history: str | None = HistoryUrlOption):
    """A payment's state changes, carrier calls and every carrier request/response (redacted)."""
    _show("procedure", "payment", payment_id, database_url, history)


@app.command()
@user_errors
def subscription(subscription_id: int, database_url: str | None = DatabaseUrlOption,
                 history: str | None = HistoryUrlOption):
    """A subscription's state changes and everything of its charges."""
    _show("subscription", "subscription", subscription_id, database_url, history)


@app.command()
@user_errors
def subscriber(subscriber_id: int, database_url: str | None = DatabaseUrlOption,
               history: str | None = HistoryUrlOption):
    """Everything that happened to one subscriber."""
    _show("subscriber", "subscriber", subscriber_id, database_url, history)


def _what(doc: dict) -> str:
    if doc["source"] == "carrier_log":
        body = doc["body"]
        return f"carrier {doc['kind']}: {body.get('outcome') or '?'}"
    return doc["kind"]


def _details(doc: dict) -> str:
    body = dict(doc["body"])
    if doc["source"] == "carrier_log":
        head = f"code {body.get('carrier_code')}, {body.get('latency_ms')} ms"
        return "\n".join((head, f"→ {_j(body.get('request'))}", f"← {_j(body.get('response'))}"))
    return _j(body)


def _j(value) -> str:
    return json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)


def _when(value) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S %Z")


def _age(value: timedelta | None) -> str:
    if value is None:
        return ""
    return str(timedelta(seconds=int(value.total_seconds())))
