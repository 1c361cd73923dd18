"""Request limits per API client, counted in the server process.

Each client's limit is data (`cp.api_client.requests_per_second`, null for the server's default); it
reaches the server with every authentication (`gateway.authenticate_client`), so a change is applied
from the next request that authenticates. A token bucket per client holds the count in memory: the
payment path writes no row for it and no two requests wait on each other. Where several server
processes share a port, each is given its share of every limit (limit / processes), so the clients'
total holds whichever process the kernel hands a connection to.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

# Requests per second of a client whose limit is null.
DEFAULT_REQUESTS_PER_SECOND = 100
# Buckets and token-to-client entries kept per process; the least recently used go first, so a
# client inventing ids or tokens costs bounded memory.
MAX_ENTRIES = 20_000
# How long the server trusts what it learnt of a token (its client and limit) for counting. A token is
# still authenticated by the database on every request; this only decides which bucket it draws from
# before the database is asked.
TOKEN_MEMORY_SECONDS = 60.0


class RateLimiter:
    """Token buckets by client id; `take` answers None (go on) or the seconds to wait before retrying."""

    def __init__(self, default_per_second: float = DEFAULT_REQUESTS_PER_SECOND, processes: int = 1,
                 clock=time.monotonic) -> None:
        self.default_per_second = default_per_second
        self.share = 1.0 / max(1, processes)
        self.clock = clock
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # client -> [tokens, at]
        self._tokens: OrderedDict[str, tuple[str, int | None, float]] = OrderedDict()  # token -> client, limit, until
        self._limits: OrderedDict[str, int | None] = OrderedDict()  # client -> its limit, as last authenticated

    def rate(self, per_second: int | None) -> float:
        return (per_second or self.default_per_second) * self.share

    def take(self, client_id: str, per_second: int | None) -> float | None:
        rate = self.rate(per_second)
        capacity = max(1.0, rate)
        now = self.clock()
        bucket = self._buckets.get(client_id)
        if bucket is None:
            bucket = self._buckets[client_id] = [capacity, now]
            if len(self._buckets) > MAX_ENTRIES:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client_id)
            bucket[0] = min(capacity, bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return None
        return (1.0 - bucket[0]) / rate

    def client_of(self, token: str) -> tuple[str, int | None] | None:
        """The client and limit a token was last authenticated for, while that is fresh."""
        entry = self._tokens.get(token)
        if entry is None:
            return None
        if entry[2] < self.clock():
            del self._tokens[token]
            return None
        return entry[0], entry[1]

    def learn(self, token: str, client_id: str, per_second: int | None) -> None:
        self._tokens[token] = (client_id, per_second, self.clock() + TOKEN_MEMORY_SECONDS)
        self._tokens.move_to_end(token)
        if len(self._tokens) > MAX_ENTRIES:
            self._tokens.popitem(last=False)
        self._limits[client_id] = per_second
        self._limits.move_to_end(client_id)
        if len(self._limits) > MAX_ENTRIES:
            self._limits.popitem(last=False)

    def knows(self, client_id: str) -> bool:
        return client_id in self._limits

    def limit_of(self, client_id: str) -> int | None:
        """A client's own limit when one of its tokens was seen lately (the token endpoint counts with it)."""
        return self._limits.get(client_id)


def retry_after(seconds: float) -> str:
    """Retry-After in whole seconds, never 0 (a client told 0 would come straight back)."""
    return str(max(1, math.ceil(seconds)))
