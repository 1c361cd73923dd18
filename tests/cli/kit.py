"""The command line as an operator runs it: `python -m carrierpay` in a subprocess, against a database."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(database_url: str, *args: str, columns: int = 250, timeout: float = 60,
            cwd: str | None = None) -> subprocess.CompletedProcess:
    """One command's exit code and output; `columns` is the terminal width its tables are laid out for."""
    env = os.environ | {"CARRIERPAY_DATABASE_URL": database_url, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "carrierpay", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=cwd)
