"""Tailnet address allocation: strategies, uniqueness, held and reserved addresses, exhaustion."""

from __future__ import annotations

import ipaddress

import pytest

from pyheadscale.state.ipalloc import AddressExhausted, IPAllocator, PrefixAllocator

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


def test_sequential_order_and_families() -> None:
    alloc = IPAllocator("100.64.0.0/10", "fd7a:115c:a1e0::/48")
    got = [alloc.allocate() for _ in range(3)]
    assert got == [(V4(f"100.64.0.{i}"), V6(f"fd7a:115c:a1e0::{i}")) for i in (1, 2, 3)]


def test_single_family() -> None:
    assert IPAllocator("100.64.0.0/24", None).allocate() == (V4("100.64.0.1"), None)
    assert IPAllocator(None, "fd7a:115c:a1e0::/120").allocate() == (None, V6("fd7a:115c:a1e0::1"))


@pytest.mark.parametrize("strategy", ["sequential", "random"])
def test_unique_until_exhausted(strategy: str) -> None:
    alloc = PrefixAllocator(ipaddress.IPv4Network("10.0.0.0/24"), strategy)  # type: ignore[arg-type]
    got = [alloc.allocate() for _ in range(254)]  # .1 - .254: network and broadcast are never handed out
    assert len(set(got)) == 254
    assert set(got) == {V4(f"10.0.0.{i}") for i in range(1, 255)}
    with pytest.raises(AddressExhausted, match=r"10\.0\.0\.0/24"):
        alloc.allocate()


@pytest.mark.parametrize("strategy", ["sequential", "random"])
def test_never_hands_out_held(strategy: str) -> None:
    alloc = PrefixAllocator(ipaddress.IPv4Network("10.0.0.0/28"), strategy)  # type: ignore[arg-type]
    held = {V4("10.0.0.1"), V4("10.0.0.5"), V4("10.0.0.14")}
    for address in held:
        alloc.hold(address)
    got = {alloc.allocate() for _ in range(11)}
    assert got.isdisjoint(held) and len(got) == 11
    with pytest.raises(AddressExhausted):
        alloc.allocate()
    alloc.release(V4("10.0.0.5"))
    assert alloc.allocate() == V4("10.0.0.5")


def test_sequential_continues_then_wraps_to_freed() -> None:
    alloc = PrefixAllocator(ipaddress.IPv4Network("10.0.0.0/29"), "sequential")
    a, b, c = alloc.allocate(), alloc.allocate(), alloc.allocate()
    alloc.release(a)
    assert alloc.allocate() == V4("10.0.0.4")  # continues past the last one handed out
    for _ in range(2):
        alloc.allocate()
    assert alloc.allocate() == a  # wraps round to the freed one
    assert {b, c} == {V4("10.0.0.2"), V4("10.0.0.3")}


@pytest.mark.parametrize("strategy", ["sequential", "random"])
def test_reserved_v4_skipped(strategy: str) -> None:
    # 100.100.100.0/24 (MagicDNS) lies inside this prefix, first in line
    alloc = PrefixAllocator(ipaddress.IPv4Network("100.100.100.0/22"), strategy)  # type: ignore[arg-type]
    got = [alloc.allocate() for _ in range(1022 - 255)]
    assert all(a not in ipaddress.IPv4Network("100.100.100.0/24") for a in got)
    if strategy == "sequential":
        assert got[0] == V4("100.100.101.0")
    with pytest.raises(AddressExhausted):
        alloc.allocate()


def test_reserved_chromeos_range_skipped() -> None:
    alloc = PrefixAllocator(ipaddress.IPv4Network("100.115.92.0/22"), "sequential")
    first = alloc.allocate()
    assert first == V4("100.115.94.0")


def test_reserved_v6_resolver_skipped() -> None:
    alloc = PrefixAllocator(ipaddress.IPv6Network("fd7a:115c:a1e0::/120"), "sequential")
    got = [alloc.allocate() for _ in range(0x60)]
    assert V6("fd7a:115c:a1e0::53") not in got
    assert got[0x52] == V6("fd7a:115c:a1e0::54")


def test_hold_outside_prefix_ignored_and_none_tolerated() -> None:
    alloc = IPAllocator("10.0.0.0/30", "fd00::/126")
    alloc.hold([V4("192.168.1.1"), None, V6("fd00::1")])
    assert alloc.allocate() == (V4("10.0.0.1"), V6("fd00::2"))
    alloc.release([None, V4("10.0.0.1")])


def test_v6_exhaustion_releases_v4() -> None:
    alloc = IPAllocator("10.0.0.0/24", "fd00::/127")  # the /127 has one usable address
    alloc.allocate()
    with pytest.raises(AddressExhausted):
        alloc.allocate()
    assert alloc.v4 is not None
    # the v4 address taken for the failed node was given back
    assert V4("10.0.0.2") not in alloc.v4._held


@pytest.mark.parametrize("strategy", ["sequential", "random"])
@pytest.mark.parametrize("prefix", ["10.0.0.0/31", "10.0.0.1/32"])
def test_prefix_without_hosts_is_exhausted(strategy: str, prefix: str) -> None:
    alloc = PrefixAllocator(ipaddress.IPv4Network(prefix), strategy)  # type: ignore[arg-type]
    with pytest.raises(AddressExhausted):
        alloc.allocate()


def test_random_spreads_addresses() -> None:
    alloc = PrefixAllocator(ipaddress.IPv4Network("100.64.0.0/10"), "random")
    got = [alloc.allocate() for _ in range(20)]
    assert len(set(got)) == 20
    assert got != sorted(got)
