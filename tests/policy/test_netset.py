"""Address sets: adding a few ranges one by one equals merging everything again."""

from __future__ import annotations

import ipaddress
import random

from pyheadscale.policy.netset import AddrSet


def test_union_with_a_few_ranges_equals_a_full_merge() -> None:
    rng = random.Random(1)
    for _ in range(1000):
        a = [
            (x, x + rng.randrange(0, 5)) for x in (rng.randrange(0, 200) for _ in range(rng.randrange(0, 12)))
        ]
        b = [
            (x, x + rng.randrange(0, 5)) for x in (rng.randrange(0, 200) for _ in range(rng.randrange(0, 9)))
        ]
        got = AddrSet(a, a) | AddrSet(b, b)
        expected = AddrSet(a + b, a + b)
        assert (got, got.to_strings()) == (expected, expected.to_strings()), (a, b)
        # Lookups use the starts the splice kept.
        for value in range(0, 210):
            for ip in (ipaddress.IPv4Address(value), ipaddress.IPv6Address(value)):
                assert got.contains_ip(ip) == expected.contains_ip(ip), (a, b, ip)
