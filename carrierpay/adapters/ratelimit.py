"""Per-carrier request budget: a token bucket refilled at the carrier's contracted TPS."""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """Up to `tps` requests at once after an idle second, then `tps` per second, first come first served."""

    def __init__(self, tps: float, burst: float | None = None) -> None:
        if tps <= 0:
            raise ValueError("tps must be positive")
        self.tps = float(tps)
        self.capacity = float(burst if burst is not None else max(1.0, tps))
        self._tokens = self.capacity
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.tps)
        self._updated = now

    async def acquire(self) -> None:
        async with self._lock:
            self._refill()
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.tps)
                self._refill()
            self._tokens -= 1
