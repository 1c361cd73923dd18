"""`carrierpay bench`: the end-to-end payment benchmark (harness in carrierpay/benchmarks/payment.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from carrierpay.cli.common import console, err_console, user_errors


@user_errors
def bench(
    duration: float = typer.Option(60.0, "--duration", min=1, help="Seconds of sustained load (and of pgbench)."),
    clients: int = typer.Option(8, "--clients", min=1, help="Concurrent api.charge SQL clients."),
    renewals: int = typer.Option(1_000_000, "--renewals", min=0, help="Subscriptions due at once (0: skip)."),
    adapters: int = typer.Option(2, "--adapters", min=1, help="Adapter daemon processes."),
    batch: int = typer.Option(500, "--batch", min=1, help="Calls claimed per adapter round."),
    pgbench: bool = typer.Option(True, "--pgbench/--no-pgbench", help="Measure the pgbench reference."),
    fast: bool = typer.Option(False, "--fast", help="fsync and synchronous_commit off (both sides)."),
    smoke: bool = typer.Option(False, "--smoke", help="Tiny run for CI: seconds, not minutes."),
    profile: bool = typer.Option(False, "--profile", help="Track nested statements and PL/pgSQL function times."),
    py_spy: bool = typer.Option(False, "--py-spy", help="Sample the adapter daemons with py-spy (pip install py-spy)."),
    keep: Path | None = typer.Option(None, "--keep", help="Build the cluster here and keep it (for profiling)."),
    http: bool = typer.Option(False, "--http", help="Also pay through the merchant HTTP API (tokens included) after "
                                                    "the SQL path, and print HTTP ÷ SQL payments/s."),
    api_processes: int = typer.Option(0, "--api-processes", min=0,
                                      help="API server processes for --http (0: one per core)."),
    shards: int = typer.Option(0, "--shards", min=0,
                               help="Run over a front and this many partitions, each its own cluster (SQL clients, "
                                    "payments only; docs/scaling.md)."),
) -> None:
    """Benchmark the payment path end to end on a throwaway embedded cluster; exits 1 when a money check fails."""
    from carrierpay.benchmarks.payment import BenchOptions, run

    values = dict(clients=clients, adapters=adapters, batch=batch, pgbench=pgbench, fast=fast, profile=profile,
                  py_spy=py_spy, http=http, api_processes=api_processes,
                  out=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
    if keep is not None:
        values |= {"home": keep, "keep": True}
    if smoke:
        opts = BenchOptions.smoke(**values)
    else:
        opts = BenchOptions(duration=duration, renewals=renewals, **values)
    if shards:
        from carrierpay.benchmarks.sharded import run_sharded

        if shards & (shards - 1):
            raise typer.BadParameter(f"a cluster has a power-of-two number of partitions, not {shards}")
        if http or profile or py_spy:
            raise typer.BadParameter("--shards measures the SQL payment path only (no --http, --profile, --py-spy)")
        report = run_sharded(opts, shards)
    else:
        report = run(opts)
    if not report.ok:
        for failure in report.failures:
            err_console.print(f"[bold red]check failed:[/] {failure}")
        raise typer.Exit(1)
