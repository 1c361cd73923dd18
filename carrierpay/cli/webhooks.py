"""`carrierpay webhooks run`: the signed merchant notification dispatcher."""

from __future__ import annotations

import asyncio
import logging

import typer

from carrierpay import db
from carrierpay.cli.common import DatabaseUrlOption, user_errors
from carrierpay.daemon import install_stop_handlers
from carrierpay.logmask import configure_logging

app = typer.Typer(help="Merchant webhooks.\n\nExample:\n\n  carrierpay webhooks run --interval 1", no_args_is_help=True)


@app.command()
@user_errors
def run(interval: float = typer.Option(1.0, help="Seconds between polls when idle"),
        batch: int = typer.Option(100, help="Notifications per batch"),
        database_url: str | None = DatabaseUrlOption) -> None:
    """Deliver pending notifications (HMAC-SHA256 signed POSTs), retrying with back-off."""
    from carrierpay import webhooks

    configure_logging(logging.INFO, "%(asctime)s %(name)s %(message)s")
    url = db.running_url(database_url)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        await webhooks.run(url, interval=interval, batch=batch, stop=stop)

    asyncio.run(main())
