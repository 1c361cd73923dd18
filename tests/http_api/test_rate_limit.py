"""The request limiter's arithmetic: token buckets per client, each server process counting its share."""

from __future__ import annotations

from carrierpay.http_api.ratelimit import MAX_ENTRIES, RateLimiter, retry_after


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_holds_one_seconds_worth_and_refills_at_the_rate():
    clock = Clock()
    limiter = RateLimiter(default_per_second=10, clock=clock)
    assert [limiter.take("c", 4) for _ in range(4)] == [None] * 4
    wait = limiter.take("c", 4)
    assert wait is not None and abs(wait - 0.25) < 1e-9 and retry_after(wait) == "1"
    clock.now += 0.5
    assert [limiter.take("c", 4) is None for _ in range(3)] == [True, True, False]
    # A client without its own limit gets the default; others' buckets are their own.
    assert sum(limiter.take("d", None) is None for _ in range(15)) == 10


def test_processes_sharing_a_port_each_count_their_share():
    clock = Clock()
    limiter = RateLimiter(default_per_second=10, processes=4, clock=clock)
    assert sum(limiter.take("c", 8) is None for _ in range(10)) == 2
    # A share below one request still lets one through, then waits for it to refill.
    assert sum(limiter.take("slow", 1) is None for _ in range(3)) == 1
    assert abs(limiter.take("slow", 1) - 4.0) < 1e-9


def test_memory_is_bounded_and_tokens_are_forgotten():
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    for i in range(MAX_ENTRIES + 50):
        limiter.take(f"client-{i}", None)
        limiter.learn(f"token-{i}", f"client-{i}", 5)
    assert len(limiter._buckets) == MAX_ENTRIES and len(limiter._tokens) == MAX_ENTRIES
    assert limiter.client_of("token-0") is None and limiter.limit_of(f"client-{MAX_ENTRIES + 49}") == 5
    assert limiter.client_of(f"token-{MAX_ENTRIES + 49}") == (f"client-{MAX_ENTRIES + 49}", 5)
    clock.now += 3600
    assert limiter.client_of(f"token-{MAX_ENTRIES + 49}") is None
