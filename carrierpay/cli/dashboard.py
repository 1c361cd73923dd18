"""`carrierpay dashboard`: the live web page (carrierpay/dashboard)."""

from __future__ import annotations

import asyncio
import logging

import typer

from carrierpay import db
from carrierpay.cli.common import DatabaseUrlOption, user_errors
from carrierpay.lifecycle import install_stop_handlers
from carrierpay.logmask import configure_logging


@user_errors
def dashboard(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (the login travels in clear over HTTP)."),
    port: int = typer.Option(8700, "--port", min=0, help="Port to bind (0: any free port)."),
    refresh: float = typer.Option(5.0, "--refresh", min=1, metavar="SECS", help="Seconds between page updates."),
    database_url: str | None = DatabaseUrlOption,
) -> None:
    """Serve the live dashboard until SIGTERM: success rates, attempts, revenue, renewals, retries and step-downs
    by hour, best hours, queues, carrier latency, open alerts and breakers, over a chosen time range. Log in with
    a database login that is a member of carrierpay_reporter (or carrierpay_admin); it reads only."""
    from carrierpay.dashboard import serve

    configure_logging(logging.INFO, "%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    url = db.running_url(database_url)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        await serve(url, host=host, port=port, refresh_s=refresh, stop=stop)

    asyncio.run(main())
