"""Per-key request rate limit: a token bucket per API key, in this process.

Per replica on purpose: it needs no round trip to NATS on every request. Behind a load
balancer over N replicas a key can make up to N times its rate; set it accordingly.
"""

import math
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int  # the burst size
    remaining: int
    retry_after: float  # seconds until one token is back (0 when allowed)


class RateLimiter:
    """`rps` tokens a second, at most `burst` saved up; one token per request."""

    def __init__(self, rps: float, burst: int) -> None:
        self.rps = rps
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(
        self, key: str, rps: float | None = None, burst: int | None = None, now: float | None = None
    ) -> Verdict:
        """Spend a token of `key`'s bucket; `rps`/`burst` override the defaults per key.
        A rate of 0 means unlimited."""
        rate = self.rps if rps is None else rps
        size = max(1, burst if burst is not None else self.burst or math.ceil(rate))
        if rate <= 0:
            return Verdict(True, size, size, 0.0)
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(size), now)
        bucket.tokens = min(size, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return Verdict(True, size, int(bucket.tokens), 0.0)
        return Verdict(False, size, 0, (1 - bucket.tokens) / rate)
