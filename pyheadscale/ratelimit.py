"""Per-source rate limits: a token bucket per client address, for what strangers can make us do.

A source is an IPv4 address or an IPv6 /64 (one customer's IPv6 allocation is at least that, so counting
addresses would let one host spread over 2^64 buckets). The table of buckets is itself bounded: past
MAX_SOURCES the least recently seen source is forgotten, which only ever gives that source a full bucket.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_SOURCES = 16_384


def source_of(address: str | None) -> str:
    """The key a client address is limited under: the IPv4 address, or the IPv6 /64 it belongs to."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def site_of(source: str) -> str:
    """The wider network a source belongs to: the /48 of an IPv6 /64 (one site's allocation, which holds
    65,536 /64s), the source itself otherwise."""
    if source.endswith("/64"):
        try:
            return str(ipaddress.IPv6Network(source).supernet(new_prefix=48))
        except ValueError:
            return source
    return source


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`burst` events at once per source, refilled at `per_second`; `on_limited` is called per refusal."""

    def __init__(
        self,
        per_second: float,
        burst: int,
        *,
        on_limited: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        self.per_second = per_second
        self.burst = burst
        self._on_limited = on_limited
        self._clock = clock
        self._max_sources = max_sources
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _bucket(self, source: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = self._buckets[source] = _Bucket(float(self.burst), now)
            if len(self._buckets) > self._max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.per_second)
            bucket.updated = now
        return bucket

    def retry_after(self, source: str) -> float:
        """Take one token for `source`: 0.0 when allowed, else the seconds until one is available."""
        bucket = self._bucket(source)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return self._refused(bucket)

    def limited(self, source: str) -> float:
        """Like `retry_after` without taking a token: for limits on failures, counted only once known."""
        bucket = self._bucket(source)
        return 0.0 if bucket.tokens >= 1.0 else self._refused(bucket)

    def _refused(self, bucket: _Bucket) -> float:
        if self._on_limited is not None:
            self._on_limited()
        return (1.0 - bucket.tokens) / self.per_second


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds; never 0, which clients read as "now"."""
    return str(max(1, math.ceil(seconds)))
