"""Settings read from the environment; one place so every command resolves them the same way."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path

DATABASE_NAME = "carrierpay"


def home() -> Path:
    """Directory holding the embedded cluster and local state (`$CARRIERPAY_HOME`, else ./.carrierpay)."""
    return Path(os.environ.get("CARRIERPAY_HOME") or Path.cwd() / ".carrierpay").resolve()


def configured_database_url(override: str | None = None) -> str | None:
    """The URL of an existing server when one is configured; None means use the embedded cluster."""
    return override or os.environ.get("CARRIERPAY_DATABASE_URL") or None


# Webhook destinations outside the public internet (loopback, private, link-local ...) are refused
# unless listed here, and plain http unless allowed: a merchant's URL must not reach our own network.
WEBHOOK_ALLOW_NETWORKS_ENV = "CARRIERPAY_WEBHOOK_ALLOW_NETWORKS"
WEBHOOK_ALLOW_HTTP_ENV = "CARRIERPAY_WEBHOOK_ALLOW_HTTP"
_TRUE = ("1", "true", "yes", "on")


def webhook_allow_networks(extra: Iterable[str] = ()) -> tuple[IPv4Network | IPv6Network, ...]:
    """Non-public networks webhooks may still go to: `extra` (command line, carrierpay.yaml) plus
    `$CARRIERPAY_WEBHOOK_ALLOW_NETWORKS` (CIDRs separated by commas or spaces); none by default."""
    values = [*extra, *re.split(r"[\s,]+", os.environ.get(WEBHOOK_ALLOW_NETWORKS_ENV, ""))]
    networks = []
    for value in (v.strip() for v in values):
        if not value:
            continue
        try:
            networks.append(ip_network(value, strict=False))
        except ValueError as exc:
            raise ValueError(f"webhook allow-list: {value[:60]!r} is not an IP network in CIDR form") from exc
    return tuple(networks)


def webhook_allow_http(override: bool = False) -> bool:
    """Whether webhooks may be posted over plain http (`$CARRIERPAY_WEBHOOK_ALLOW_HTTP`); https only by default."""
    return override or os.environ.get(WEBHOOK_ALLOW_HTTP_ENV, "").strip().lower() in _TRUE
