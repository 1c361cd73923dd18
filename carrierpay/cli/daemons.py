"""The daemons: `adapters run`, `reconcile run`, `callbacks serve`, `scheduler run`.

Each holds no state of its own, stops cleanly on SIGTERM/SIGINT, survives database restarts,
and may run as several copies.
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import timedelta

import typer

from carrierpay import db, metrics
from carrierpay.cli.common import DatabaseUrlOption, MetricsHostOption, MetricsPortOption, fail, user_errors
from carrierpay.lifecycle import install_stop_handlers
from carrierpay.logmask import configure_logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
VerboseOption = typer.Option(False, "--verbose", "-v")  # debug logging
CarrierOption = typer.Option(None, "--carrier", "-c",
                             help="Only this carrier (repeatable). Default: every enabled one.")
CallbackBaseOption = typer.Option(
    None, "--callback-base-url", envvar="CARRIERPAY_CALLBACK_BASE_URL", show_envvar=True,
    help="Public address of the callback server, e.g. https://cb.example.com (carriers that call back need it).")
# What both HTTP servers (`callbacks serve`, `api serve`) take: where to listen, TLS, and how much a
# client may hold of them.
HostOption = typer.Option("127.0.0.1", "--host", help="Address to bind.")
CertOption = typer.Option(None, "--cert", help="TLS certificate chain (PEM): serve HTTPS.")
TlsKeyOption = typer.Option(None, "--key", help="TLS private key (PEM).")
MaxConnectionsOption = typer.Option(256, "--max-connections", min=1, help="Open connections at most.")
HeaderTimeoutOption = typer.Option(
    10.0, "--header-timeout", min=0.1, help="Seconds a client has to send a request's headers (and TLS handshake).")
BodyTimeoutOption = typer.Option(10.0, "--body-timeout", min=0.1, help="Seconds a client has to send a body.")
IdleTimeoutOption = typer.Option(30.0, "--idle-timeout", min=0.1, help="Seconds a kept-alive connection may stay idle.")

adapters_app = typer.Typer(help="Adapter daemons: claim carrier calls, call the carriers, complete.",
                           no_args_is_help=True)
reconcile_app = typer.Typer(help="Reconciler: settle unknown and awaited carrier outcomes.", no_args_is_help=True)
callbacks_app = typer.Typer(help="Callback server: receive carrier callbacks.", no_args_is_help=True)
scheduler_app = typer.Typer(help="Scheduler: renewals, retries, reminders, lease expiry.", no_args_is_help=True)
api_app = typer.Typer(help="Merchant HTTP API: CAMARA Carrier Billing over HTTPS with OAuth2 tokens.",
                      no_args_is_help=True)


def _check_tls(cert: str | None, key: str | None, client_ca: str | None = None) -> None:
    """Refuse TLS files an HTTP server could not use now: an unusable file is one line, not a traceback later."""
    from carrierpay.adapters.auth import TlsConfigError
    from carrierpay.adapters.callback_server import server_ssl_context

    if bool(cert) != bool(key):
        raise typer.BadParameter("--cert and --key go together")
    if client_ca and not cert:
        raise typer.BadParameter("--client-ca needs --cert and --key: client certificates come with HTTPS")
    if cert and key:
        try:
            server_ssl_context(cert, key, client_ca)
        except TlsConfigError as exc:
            fail(str(exc))


def _logging(verbose: bool) -> None:
    configure_logging(logging.DEBUG if verbose else logging.INFO, LOG_FORMAT)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def _with_signals(make) -> None:
    stop = asyncio.Event()
    install_stop_handlers(stop)
    await make(stop)


@adapters_app.command("run")
@user_errors
def adapters_run(
    carrier: list[str] | None = CarrierOption,
    batch: int = typer.Option(200, "--batch", min=1, metavar="N",
                              help="Most calls per carrier claimed and not yet recorded (and answers per commit)."),
    lease: float = typer.Option(60.0, "--lease", min=1, metavar="SECS",
                                help="Seconds a claimed call stays with this process."),
    poll: float = typer.Option(1.0, "--poll", min=0.01, metavar="SECS",
                               help="Seconds between polls when no NOTIFY arrives."),
    callback_base_url: str | None = CallbackBaseOption,
    database_url: str | None = DatabaseUrlOption,
    metrics_port: int | None = MetricsPortOption,
    metrics_host: str = MetricsHostOption,
    verbose: bool = VerboseOption,
) -> None:
    """Run an adapter daemon until SIGTERM: each answer is recorded as it arrives (answers arriving within
    10 ms share a commit). Logs a line per carrier every 10 s of activity."""
    from carrierpay.adapters.daemon import AdapterDaemon
    from carrierpay.adapters.registry import connector_factory

    _logging(verbose)
    metrics.expose(metrics_port, metrics_host, daemon="adapters")
    url = db.running_url(database_url)
    factory = connector_factory(callback_base=callback_base_url, database_url=url)
    daemon = AdapterDaemon(url, factory, carriers=carrier, batch=batch,
                           lease=timedelta(seconds=lease), poll_interval=poll)
    logging.getLogger("carrierpay.adapters").info("adapter %s starting (batch %d, lease %ss)", daemon.worker,
                                                  batch, lease)
    asyncio.run(_with_signals(daemon.run))


@reconcile_app.command("run")
@user_errors
def reconcile_run(
    carrier: list[str] | None = CarrierOption,
    interval: float = typer.Option(5.0, "--interval", min=0.01, metavar="SECS", help="Seconds between rounds."),
    batch: int = typer.Option(200, "--batch", min=1, metavar="N", help="Calls settled per round."),
    once: bool = typer.Option(False, "--once", help="One round, then exit."),
    callback_base_url: str | None = CallbackBaseOption,
    database_url: str | None = DatabaseUrlOption,
    metrics_port: int | None = MetricsPortOption,
    metrics_host: str = MetricsHostOption,
    verbose: bool = VerboseOption,
) -> None:
    """Expire stale leases and settle unknown/awaited calls (status query, result file, late callback)."""
    from carrierpay.adapters.reconciler import Reconciler
    from carrierpay.adapters.registry import connector_factory

    _logging(verbose)
    metrics.expose(metrics_port, metrics_host, daemon="reconciler")
    url = db.running_url(database_url)
    reconciler = Reconciler(url, connector_factory(callback_base=callback_base_url, database_url=url),
                            carriers=carrier, batch=batch, interval=interval)
    asyncio.run(_with_signals(lambda stop: reconciler.run(stop, once=once)))


@reconcile_app.command("pending")
@user_errors
def reconcile_pending(fmt: str = typer.Option("table", "--format", help="table, csv or json"),
                      database_url: str | None = DatabaseUrlOption) -> None:
    """The operator queue: calls reconciliation could not settle within their carrier's limit of turns
    (`reconciliation.operator_after_turns` in the spec, 3 by default), such as a charge on a carrier with
    neither a status query nor a result file."""
    from carrierpay.cli import calls

    calls.unsettled(fmt=fmt, database_url=database_url)


@reconcile_app.command("resolve")
@user_errors
def reconcile_resolve(
    call_id: int = typer.Argument(..., metavar="ID", help="The call id, as `reconcile pending` lists it."),
    outcome: str = typer.Argument(..., help="succeeded or failed"),
    evidence: str = typer.Option(..., "--evidence", help="How the outcome was established (kept for audit)."),
    database_url: str | None = DatabaseUrlOption,
) -> None:
    """Settle one call of the operator queue from the carrier's own word (admin.settle_call): the payment
    or refund and the ledger follow as for a carrier's answer; a settled_by_operator event keeps who and why."""
    from carrierpay.cli import calls

    calls.settle(call_id, outcome, reason=evidence, database_url=database_url)


@callbacks_app.command("serve")
@user_errors
def callbacks_serve(
    host: str = HostOption,
    port: int = typer.Option(8080, "--port", help="Port to bind (0: any free port)."),
    cert: str | None = CertOption,
    key: str | None = TlsKeyOption,
    client_ca: str | None = typer.Option(
        None, "--client-ca", help="CA bundle (PEM) for carriers' client certificates (callbacks.auth mutual_tls)."),
    max_connections: int = MaxConnectionsOption,
    header_timeout: float = HeaderTimeoutOption,
    body_timeout: float = BodyTimeoutOption,
    idle_timeout: float = IdleTimeoutOption,
    database_url: str | None = DatabaseUrlOption,
    metrics_port: int | None = MetricsPortOption,
    metrics_host: str = MetricsHostOption,
    verbose: bool = VerboseOption,
) -> None:
    """Serve /callbacks/{carrier} until SIGTERM."""
    from carrierpay.adapters.callback_server import serve
    from carrierpay.guarded_http import HttpLimits

    _check_tls(cert, key, client_ca)
    limits = HttpLimits(max_connections=max_connections, header_timeout_s=header_timeout, body_timeout_s=body_timeout,
                        idle_timeout_s=idle_timeout)
    _logging(verbose)
    metrics.expose(metrics_port, metrics_host, daemon="callbacks")
    asyncio.run(serve(db.running_url(database_url), host=host, port=port, cert=cert, key=key, client_ca=client_ca,
                      limits=limits))


@scheduler_app.command("run")
@user_errors
def scheduler_run(
    interval: float = typer.Option(1.0, "--interval", min=0.01, help="Seconds between ticks."),
    batch: int = typer.Option(1000, "--batch", min=1),
    once: bool = typer.Option(False, "--once", help="One tick, then exit."),
    database_url: str | None = DatabaseUrlOption,
    metrics_port: int | None = MetricsPortOption,
    metrics_host: str = MetricsHostOption,
    verbose: bool = VerboseOption,
) -> None:
    """Queue due renewals and retries, fold hour statistics and rollups, judge circuit breakers, expire
    leases."""
    from carrierpay import scheduler

    _logging(verbose)
    metrics.expose(metrics_port, metrics_host, daemon="scheduler")
    url = db.running_url(database_url)
    asyncio.run(_with_signals(lambda stop: scheduler.run(url, interval=interval, batch=batch, stop=stop, once=once)))


@api_app.command("serve")
@user_errors
def api_serve(
    host: str = HostOption,
    port: int = typer.Option(8443, "--port", help="Port to bind (0: any free port)."),
    cert: str | None = CertOption,
    key: str | None = TlsKeyOption,
    max_connections: int = MaxConnectionsOption,
    header_timeout: float = HeaderTimeoutOption,
    body_timeout: float = BodyTimeoutOption,
    idle_timeout: float = IdleTimeoutOption,
    processes: int = typer.Option(
        1, "--processes", min=0,
        help="Server processes sharing the port (SO_REUSEPORT; 0: one per core). A fixed --port is needed."),
    rate_limit: int = typer.Option(
        100, "--rate-limit", min=1,
        help="Requests per second of an API client whose own limit is not set (merchant client limit)."),
    database_url: str | None = DatabaseUrlOption,
    metrics_port: int | None = MetricsPortOption,
    metrics_host: str = MetricsHostOption,
    verbose: bool = VerboseOption,
) -> None:
    """Serve the merchant HTTP API (and its document at /openapi.yaml) until SIGTERM. The database login
    must be a member of carrierpay_gateway: it acts for a merchant only by SET ROLE to the merchant's role."""
    from carrierpay.guarded_http import HttpLimits
    from carrierpay.http_api.server import MAX_BODY_BYTES, serve_processes

    _check_tls(cert, key)
    limits = HttpLimits(max_connections=max_connections, header_timeout_s=header_timeout, body_timeout_s=body_timeout,
                        idle_timeout_s=idle_timeout, max_body_bytes=MAX_BODY_BYTES)
    _logging(verbose)
    metrics.expose(metrics_port, metrics_host, daemon="api")
    processes = processes or os.cpu_count() or 1
    if processes > 1 and port == 0:
        raise typer.BadParameter("--processes above 1 needs a fixed --port")
    serve_processes(db.running_url(database_url), processes=processes, host=host, port=port, cert=cert, key=key,
                    limits=limits, rate_limit=rate_limit)


metrics_app = typer.Typer(help="Prometheus metrics of the database: queues, unsettled calls, breakers, backlogs.",
                          no_args_is_help=True)


@metrics_app.command("serve")
@user_errors
def metrics_serve(
    port: int = typer.Option(9460, "--port", min=0, help="Port of /metrics (0: any free port)."),
    host: str = HostOption,
    ledger_check: float = typer.Option(15.0, "--ledger-check", min=1, metavar="SECS",
                                       help="Seconds between checks of unbalanced journals (the ledger fold and the "
                                            "journals since)."),
    database_url: str | None = DatabaseUrlOption,
    verbose: bool = VerboseOption,
) -> None:
    """Serve the database collector on /metrics until SIGTERM (read-only: the report views)."""
    import signal
    import threading

    _logging(verbose)
    url = db.running_url(database_url)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        metrics.serve_database(url, port, host, ledger_check_s=ledger_check, stop=stop)
    except OSError as exc:
        fail(str(exc), hint="choose another --port")
