"""Address sets: adding a few ranges one by one equals merging everything again."""

from __future__ import annotations

import ipaddress
import random

from pyheadscale.policy import netset
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


def _zero_heavy_v6(rng: random.Random) -> int:
    """An IPv6 address whose hextets are mostly zero, so runs of zeros of every length and place occur."""
    value = 0
    for _ in range(8):
        value = (value << 16) | (
            0 if rng.random() < 0.6 else rng.choice([1, 0xA, 0xFFFF, rng.randrange(1 << 16)])
        )
    return value


def test_address_texts_are_what_ipaddress_writes() -> None:
    rng = random.Random(2)
    values = [_zero_heavy_v6(rng) for _ in range(20000)] + [rng.randrange(1 << 128) for _ in range(2000)]
    values += [0, 1, (1 << 128) - 1, 0xFFFF << 32 | 0x01020304, 0x01020304, 1 << 48, (1 << 48) - 1]
    for value in values:
        expected = str(ipaddress.IPv6Address(value))
        assert netset._v6_text(value) == expected, hex(value)
        assert netset.range_text(6, value, value) == expected
    for value in [0, 1, 255, 256, 0x64400001, (1 << 32) - 1] + [rng.randrange(1 << 32) for _ in range(2000)]:
        assert netset.range_text(4, value, value) == str(ipaddress.IPv4Address(value))
    ranges = ((0x64400000, 0x644000FF), (0x64400100, 0x64400102), (0x64400200, 0x64400200))
    assert netset.range_texts(4, ranges) == ["100.64.0.0/24", "100.64.1.0-100.64.1.2", "100.64.2.0"]


def test_parse_address_reads_what_ipaddress_reads() -> None:
    rng = random.Random(3)
    texts = [str(ipaddress.IPv6Address(_zero_heavy_v6(rng))) for _ in range(3000)]
    texts += [str(ipaddress.IPv4Address(rng.randrange(1 << 32))) for _ in range(3000)]
    texts += [
        "100.64.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "01.2.3.4",
        "1.2.3.04",
        "1.2.3",
        "1.2.3.4.5",
        "256.1.1.1",
        " 1.2.3.4",
        "1.2.3.4 ",
        "",
        "1.2.3.4/32",
        "1.2.3.4\x00",
        "\u0661.2.3.4",
        "fd7a:115c:a1e0::1",
        "FD7A:115C:A1E0::1",
        "fd7a:115c:a1e0:0::1",
        "fd7a:115c:a1e0:0:0:0:0:1",
        "::",
        "::1",
        "1::",
        "::ffff:1.2.3.4",
        "::1.2.3.4",
        "::ffff:102:304",
        "fe80::1%eth0",
        "fe80::1%",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8:9",
        "1::2::3",
        "12345::",
        "1:2:3:4:5:6:7::8",
        "0001:2::",
        ":::",
        "1:2:3:4:5:6:1.2.3.4",
        "fd7a:115c:a1e0::1/128",
    ]
    for text in texts:
        try:
            expected: object = ipaddress.ip_address(text)
        except ValueError:
            expected = ValueError
        try:
            got: object = netset.parse_address(text)
        except ValueError:
            got = ValueError
        assert got == expected, text
        if isinstance(got, ipaddress.IPv6Address):
            assert got.scope_id == expected.scope_id, text  # type: ignore[attr-defined]
