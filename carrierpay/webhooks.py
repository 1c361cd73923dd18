"""`carrierpay webhooks run`: deliver merchant notifications as signed HTTP POSTs, with retries.

Signature: `X-Carrierpay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
the scheme merchants verify with their webhook secret (rotate it with `carrierpay merchant
rotate-secret`). A 2xx answer is a delivery; anything else is retried with back-off in the database.

The URL is the merchant's, so where it leads is not ours to trust: a redirect is never followed (a
3xx is a failed delivery), plain http is refused unless allowed, and every address the client is
about to connect to (after DNS, at connect time, so a name that changes its answer cannot slip
through) must be public unless the operator allows its network (`DestinationPolicy`).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import json
import logging
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import aiohttp
import psycopg
from psycopg.types.json import Jsonb

from carrierpay import config, metrics, queries
from carrierpay.lifecycle import run_until_stopped, sleep_or_stop

log = logging.getLogger("carrierpay.webhooks")


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, tolerance_s: int = 300, now: float | None = None) -> bool:
    """What a merchant runs on receipt (also used by our tests)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
_NAT64 = ip_network("64:ff9b::/96")
_REFUSED = "webhook destination"


class DestinationRefused(OSError):
    """An address the policy does not allow webhooks to reach (raised before connecting to it)."""


def non_public_kind(address: IPAddress) -> str | None:
    """What makes an address unfit for a merchant's webhook ("loopback", "private" ...), or None when public.

    IPv6 forms that carry an IPv4 address (mapped, 6to4, NAT64) lead to that address: judged by it.
    """
    if isinstance(address, IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return non_public_kind(embedded)
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, IPv6Address) and address.is_site_local:
        return "site-local"
    if address.is_private:
        return "private or special-purpose"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "non-public"
    return None


@dataclass(frozen=True)
class DestinationPolicy:
    """Where webhooks may go: public addresses over https, plus what the operator explicitly allows."""

    allow_networks: tuple[IPNetwork, ...] = ()
    allow_http: bool = False

    @classmethod
    def from_settings(cls, networks: Iterable[str] = (), allow_http: bool = False) -> DestinationPolicy:
        """The policy from explicit settings plus the environment (carrierpay.config)."""
        return cls(config.webhook_allow_networks(networks), config.webhook_allow_http(allow_http))

    def address_refusal(self, host: str) -> str | None:
        """Why connecting to this IP address is refused, or None when it is allowed."""
        try:
            address = ip_address(host.split("%", 1)[0])
        except ValueError:
            return f"{host[:60]!r} is not an IP address"
        candidates = [address]
        if isinstance(address, IPv6Address) and address.ipv4_mapped:
            candidates.append(address.ipv4_mapped)
        if any(candidate in network for candidate in candidates for network in self.allow_networks):
            return None
        kind = non_public_kind(address)
        if kind is None:
            return None
        return f"{address} is not a public address ({kind}); an operator may allow its network " \
               f"({config.WEBHOOK_ALLOW_NETWORKS_ENV})"

    def url_refusal(self, url: str) -> str | None:
        """Why a webhook URL is refused before any connection (its scheme), or None."""
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme == "https" or (scheme == "http" and self.allow_http):
            return None
        if scheme == "http":
            return f"plain http is not allowed (use https, or set {config.WEBHOOK_ALLOW_HTTP_ENV})"
        return f"scheme {scheme[:10]!r} is not allowed (https only)"

    def socket(self, addr_info: tuple) -> socket.socket:
        """aiohttp's socket factory: called with each address right before connecting to it."""
        family, type_, proto, _, sockaddr = addr_info
        refusal = self.address_refusal(str(sockaddr[0]))
        if refusal is not None:
            raise DestinationRefused(errno.EACCES, f"{_REFUSED} {refusal}")
        return socket.socket(family=family, type=type_, proto=proto)


class WebhookClient:
    """The dispatcher's HTTP client: posts only where its policy allows, and never follows a redirect.

    `resolver` replaces DNS (tests); whatever it answers is still checked at connect time. `ssl_context`
    replaces the system's trusted CAs (tests with their own CA).
    """

    def __init__(self, policy: DestinationPolicy, *, resolver: aiohttp.abc.AbstractResolver | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.policy = policy
        self._resolver = resolver
        self._ssl = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> WebhookClient:
        connector = aiohttp.TCPConnector(socket_factory=self.policy.socket, resolver=self._resolver, ssl=self._ssl)
        # No proxy from the environment: the connection must go where the policy checked.
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self

    async def __aexit__(self, *exc_info) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver(self, item: dict, timeout_s: float) -> dict:
        notification_id = item["notification_id"]

        def failed(error: str) -> dict:
            return {"notification_id": notification_id, "delivered": False, "error": error}

        refusal = self.policy.url_refusal(item["url"])
        if refusal is not None:
            return failed(f"refused: {refusal}")
        body = json.dumps(item["body"], separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": item.get("content_type", "application/json"),
            "X-Carrierpay-Event": item["kind"],
            "X-Carrierpay-Id": str(notification_id),
            "X-Carrierpay-Signature": sign(item["secret"], body, int(time.time())),
        }
        if item.get("bearer"):
            # A CAMARA sink authenticates us with the credential the merchant gave with its request.
            headers["Authorization"] = f"Bearer {item['bearer']}"
        try:
            async with self._session.post(item["url"], data=body, headers=headers, allow_redirects=False,
                                          timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                if 200 <= response.status < 300:
                    return {"notification_id": notification_id, "delivered": True}
                if 300 <= response.status < 400:
                    location = response.headers.get("Location", "")
                    return failed(f"HTTP {response.status}: redirect to {location[:80]!r} not followed "
                                  "(the webhook URL must answer 2xx itself)")
                return failed(f"HTTP {response.status}")
        except aiohttp.ClientConnectorError as exc:
            # Several addresses all refused arrive as one OSError naming each refusal.
            reason = exc.os_error.strerror or ""
            if isinstance(exc.os_error, DestinationRefused) or _REFUSED in reason:
                return failed(f"refused: {reason}")
            return failed(f"{type(exc).__name__}: {exc}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return failed(f"{type(exc).__name__}: {exc}")


async def dispatch_once(conn: psycopg.AsyncConnection, client: WebhookClient, *, batch: int = 100,
                        timeout_s: float = 10.0) -> int:
    cur = await conn.execute(queries.CLAIM_NOTIFICATIONS, {"limit": batch, "lease": timedelta(seconds=timeout_s * 3)})
    items = [row[0] for row in await cur.fetchall()]
    if not items:
        return 0
    results = await asyncio.gather(*(client.deliver(item, timeout_s) for item in items))
    for result in results:
        metrics.WEBHOOK_DELIVERIES.labels(result="delivered" if result["delivered"] else "failed").inc()
    await conn.execute(queries.COMPLETE_NOTIFICATIONS, {"results": Jsonb(list(results))})
    return len(items)


async def run(url: str, *, policy: DestinationPolicy | None = None, interval: float = 1.0, batch: int = 100,
              stop: asyncio.Event | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
    """Deliver until stopped; `policy` defaults to the environment's (public https destinations only),
    `ssl_context` to the system's trusted CAs."""
    stop = stop or asyncio.Event()
    policy = policy or DestinationPolicy.from_settings()

    async def body(stop: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn, \
                WebhookClient(policy, ssl_context=ssl_context) as client:
            while not stop.is_set():
                sent = await dispatch_once(conn, client, batch=batch)
                if sent:
                    log.info("delivered or retried %d webhooks", sent)
                    continue
                await sleep_or_stop(stop, interval)

    await run_until_stopped(body, stop, name="webhooks")
