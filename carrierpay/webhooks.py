"""`carrierpay webhooks run`: deliver merchant notifications as signed HTTP POSTs, with retries.

Signature: `X-Carrierpay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
the scheme merchants verify with their webhook secret (rotate it with `carrierpay merchant
rotate-secret`). A 2xx answer is a delivery; anything else is retried with back-off in the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta

import aiohttp
import psycopg
from psycopg.types.json import Jsonb

from carrierpay import queries
from carrierpay.daemon import run_until_stopped, sleep_or_stop

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


async def deliver(session: aiohttp.ClientSession, item: dict, timeout_s: float) -> dict:
    body = json.dumps(item["body"], separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Carrierpay-Event": item["kind"],
        "X-Carrierpay-Id": str(item["notification_id"]),
        "X-Carrierpay-Signature": sign(item["secret"], body, int(time.time())),
    }
    try:
        async with session.post(item["url"], data=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            if 200 <= response.status < 300:
                return {"notification_id": item["notification_id"], "delivered": True}
            return {"notification_id": item["notification_id"], "delivered": False,
                    "error": f"HTTP {response.status}"}
    except (aiohttp.ClientError, TimeoutError) as exc:
        return {"notification_id": item["notification_id"], "delivered": False,
                "error": f"{type(exc).__name__}: {exc}"}


async def dispatch_once(conn: psycopg.AsyncConnection, session: aiohttp.ClientSession, *, batch: int = 100,
                        timeout_s: float = 10.0) -> int:
    cur = await conn.execute(queries.CLAIM_NOTIFICATIONS, {"limit": batch, "lease": timedelta(seconds=timeout_s * 3)})
    items = [row[0] for row in await cur.fetchall()]
    if not items:
        return 0
    results = await asyncio.gather(*(deliver(session, item, timeout_s) for item in items))
    await conn.execute(queries.COMPLETE_NOTIFICATIONS, {"results": Jsonb(list(results))})
    return len(items)


async def run(url: str, *, interval: float = 1.0, batch: int = 100, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()

    async def body(stop: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn, \
                aiohttp.ClientSession() as session:
            while not stop.is_set():
                sent = await dispatch_once(conn, session, batch=batch)
                if sent:
                    log.info("delivered or retried %d webhooks", sent)
                    continue
                await sleep_or_stop(stop, interval)

    await run_until_stopped(body, stop, name="webhooks")
