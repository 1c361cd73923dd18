"""`carrierpay webhooks run`: the signed merchant notification dispatcher."""

from __future__ import annotations

import asyncio
import logging

import typer

from carrierpay import db
from carrierpay.cli.common import DatabaseUrlOption, MetricsHostOption, MetricsPortOption, user_errors
from carrierpay.lifecycle import install_stop_handlers
from carrierpay.logmask import configure_logging

app = typer.Typer(help="Merchant webhooks.\n\nExample:\n\n  carrierpay webhooks run --interval 1", no_args_is_help=True)


@app.command()
@user_errors
def run(interval: float = typer.Option(1.0, help="Seconds between polls when idle"),
        batch: int = typer.Option(100, help="Notifications per batch"),
        allow_network: list[str] = typer.Option(
            [], "--allow-network", metavar="CIDR",
            help="A non-public network (loopback, private, link-local ...) webhooks may still be posted to; "
                 "repeat for several. Added to $CARRIERPAY_WEBHOOK_ALLOW_NETWORKS. None by default."),
        allow_http: bool = typer.Option(
            False, "--allow-http",
            help="Also post to plain http URLs (else https only; or $CARRIERPAY_WEBHOOK_ALLOW_HTTP=1)"),
        database_url: str | None = DatabaseUrlOption,
        metrics_port: int | None = MetricsPortOption,
        metrics_host: str = MetricsHostOption) -> None:
    """Deliver pending notifications (HMAC-SHA256 signed POSTs), retrying with back-off.

    Redirects are never followed; non-public destinations are refused at connect time unless allowed.
    """
    from carrierpay import webhooks

    try:
        policy = webhooks.DestinationPolicy.from_settings(allow_network, allow_http)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--allow-network") from exc
    configure_logging(logging.INFO, "%(asctime)s %(name)s %(message)s")
    from carrierpay import metrics

    metrics.expose(metrics_port, metrics_host, daemon="webhooks")
    url = db.running_url(database_url)
    if policy.allow_networks or policy.allow_http:
        logging.getLogger("carrierpay.webhooks").warning(
            "webhooks may also go to %s%s", ", ".join(map(str, policy.allow_networks)) or "no private network",
            " and over plain http" if policy.allow_http else "")

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        await webhooks.run(url, policy=policy, interval=interval, batch=batch, stop=stop)

    asyncio.run(main())
