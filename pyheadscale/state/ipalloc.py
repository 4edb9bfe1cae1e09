"""Tailnet address allocation from the configured IPv4 and IPv6 prefixes.

An address is never handed out while a node holds it; the set of held addresses is rebuilt from the database
at start, so allocation survives restarts. Sequential allocation continues after the highest address handed
out in this process (wrapping round to reuse freed ones), random allocation draws until it finds a free one.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable
from typing import Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Addresses Tailscale reserves inside its ranges: the MagicDNS resolver and the ChromeOS VM range.
_RESERVED_V4 = (ipaddress.IPv4Network("100.100.100.0/24"), ipaddress.IPv4Network("100.115.92.0/23"))
_RESERVED_V6 = (ipaddress.IPv6Network("fd7a:115c:a1e0::53/128"),)


class AddressExhausted(Exception):
    """The prefix has no free address left."""


class PrefixAllocator:
    """Allocates host addresses from one prefix."""

    def __init__(
        self, prefix: ipaddress.IPv4Network | ipaddress.IPv6Network, strategy: Literal["sequential", "random"]
    ):
        self.prefix = prefix
        self.strategy = strategy
        self._held: set[int] = set()
        self._first = int(prefix.network_address) + 1
        self._last = int(prefix.broadcast_address) - (1 if prefix.version == 4 else 0)
        self._next = self._first
        self._reserved = _RESERVED_V4 if prefix.version == 4 else _RESERVED_V6
        self._rng = random.SystemRandom()

    def _usable(self, value: int) -> bool:
        if value in self._held:
            return False
        address = ipaddress.ip_address(value)
        return not any(address in net for net in self._reserved)

    def hold(self, address: IPAddress) -> None:
        if address not in self.prefix:
            return
        self._held.add(int(address))

    def release(self, address: IPAddress | None) -> None:
        if address is not None:
            self._held.discard(int(address))

    def allocate(self) -> IPAddress:
        size = self._last - self._first + 1
        if size <= 0:
            raise AddressExhausted(f"{self.prefix} has no host addresses")
        if self.strategy == "random":
            for _ in range(64):
                candidate = self._first + self._rng.randrange(size)
                if self._usable(candidate):
                    return self._take(candidate)
        # Sequential scan (also the fallback when random draws keep colliding in a nearly full prefix).
        candidate = self._next
        for _ in range(min(size, 1 << 24)):
            if candidate > self._last:
                candidate = self._first
            if self._usable(candidate):
                self._next = candidate + 1
                return self._take(candidate)
            candidate += 1
        raise AddressExhausted(f"no free address left in {self.prefix}")

    def _take(self, value: int) -> IPAddress:
        self._held.add(value)
        return ipaddress.ip_address(value)


class IPAllocator:
    """Allocates one address per configured family for each new node."""

    def __init__(
        self, v4: str | None, v6: str | None, strategy: Literal["sequential", "random"] = "sequential"
    ):
        self.v4 = PrefixAllocator(ipaddress.IPv4Network(v4), strategy) if v4 else None
        self.v6 = PrefixAllocator(ipaddress.IPv6Network(v6), strategy) if v6 else None

    def hold(self, addresses: Iterable[IPAddress | None]) -> None:
        for address in addresses:
            if address is None:
                continue
            allocator = self.v4 if address.version == 4 else self.v6
            if allocator is not None:
                allocator.hold(address)

    def release(self, addresses: Iterable[IPAddress | None]) -> None:
        for address in addresses:
            if address is None:
                continue
            allocator = self.v4 if address.version == 4 else self.v6
            if allocator is not None:
                allocator.release(address)

    def allocate(self) -> tuple[ipaddress.IPv4Address | None, ipaddress.IPv6Address | None]:
        v4 = self.v4.allocate() if self.v4 else None
        try:
            v6 = self.v6.allocate() if self.v6 else None
        except AddressExhausted:
            if self.v4 is not None and v4 is not None:
                self.v4.release(v4)
            raise
        return v4, v6  # type: ignore[return-value]
