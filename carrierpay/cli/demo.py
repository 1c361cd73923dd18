"""`carrierpay demo`: the whole platform on this machine, through a simulated week (carrierpay/demo.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from carrierpay.cli.common import DatabaseUrlOption, console, fail, user_errors


@user_errors
def demo(
    subscribers: int = typer.Option(10_000, "--subscribers", min=10, max=30_000, help="Simulated subscribers."),
    days: int = typer.Option(7, "--days", min=1, max=31, help="Simulated days to run, hour by hour."),
    seed: int = typer.Option(42, "--seed", help="Seed of the populations, habits and choices."),
    keep: bool = typer.Option(False, "--keep", help="Afterwards keep the database, simulators and daemons "
                                                    "running until Ctrl-C, and print what to try."),
    summary: Path | None = typer.Option(None, "--summary", help="Also write the report and checks as JSON here."),
    dashboard_port: int = typer.Option(8700, "--dashboard-port", min=0,
                                       help="Port of the live dashboard (taken or 0: any free port)."),
    database_url: str | None = DatabaseUrlOption,
    shards: int = typer.Option(0, "--shards", min=0, max=16,
                               help="Run over a front and this many partitions (a power of two), each its own "
                                    "embedded PostgreSQL cluster (docs/sharding.md). 0: one database."),
) -> None:
    """Run carrierpay end to end: embedded PostgreSQL, four simulated carriers (GB, ZA, NG, IN), two
    merchants, thousands of subscribers, a simulated week of renewals, retries, step-downs, refunds and
    cancellations; then a report per carrier and consistency checks (exit 1 if any fails).

    The database carrierpay_demo is recreated on every run. Example: carrierpay demo --subscribers 2000 --days 3.
    With --shards 2, the same over a front and two partitions, checked per partition and in total.
    """
    from carrierpay.demo import DemoOptions, run_demo

    if shards and (shards & (shards - 1)):
        fail(f"--shards takes a power of two, not {shards}")
    if shards and (keep or database_url):
        fail("--shards runs on clusters of its own: without --keep and --database-url")
    options = DemoOptions(subscribers=subscribers, days=days, seed=seed, keep=keep, summary=summary,
                          database_url=database_url, dashboard_port=dashboard_port, shards=shards)
    result = asyncio.run(run_demo(options, console))
    if not result.get("ok"):
        raise typer.Exit(1)
