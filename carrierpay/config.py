"""Settings read from the environment; one place so every command resolves them the same way."""

from __future__ import annotations

import os
from pathlib import Path

DATABASE_NAME = "carrierpay"


def home() -> Path:
    """Directory holding the embedded cluster and local state (`$CARRIERPAY_HOME`, else ./.carrierpay)."""
    return Path(os.environ.get("CARRIERPAY_HOME") or Path.cwd() / ".carrierpay").resolve()


def configured_database_url(override: str | None = None) -> str | None:
    """The URL of an existing server when one is configured; None means use the embedded cluster."""
    return override or os.environ.get("CARRIERPAY_DATABASE_URL") or None
