"""Run `carrierpay` as a user does: this checkout's code, none of the test run's CARRIERPAY_* settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def user_environment(home: Path | None = None) -> dict[str, str]:
    """The environment of a user's shell; CARRIERPAY_HOME only when given (else ./.carrierpay)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CARRIERPAY_")}
    if home is not None:
        env["CARRIERPAY_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_carrierpay(cwd: Path, *args: str, home: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "carrierpay", *args], env=user_environment(home),
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def start_carrierpay(cwd: Path, *args: str, home: Path | None = None) -> subprocess.Popen:
    """A long-running command (the demo), its output merged and readable line by line."""
    return subprocess.Popen([sys.executable, "-m", "carrierpay", *args], env=user_environment(home), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def read_until(process: subprocess.Popen, marker: str, seconds: float) -> list[str]:
    """The lines `process` printed up to and including the first holding `marker` (or until `seconds` passed)."""
    import time

    seen: list[str] = []
    deadline = time.monotonic() + seconds
    for line in process.stdout:
        seen.append(line)
        if marker in line or time.monotonic() > deadline:
            break
    return seen
