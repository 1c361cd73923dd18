"""The `carrierpay` command line (typer)."""
