"""Immutable sets of IP addresses, kept as sorted, merged integer ranges per family.

Policy evaluation constantly asks "is this address in that set" and "do these
two sets overlap"; ``ipaddress`` networks are too slow for that at ten
thousand nodes, so addresses are plain integers and a set is two tuples of
inclusive ``(first, last)`` ranges, one per IP family.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import itertools
import operator
import socket
import struct
from collections.abc import Iterable, Iterator, Sequence

Range = tuple[int, int]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4_MAX = (1 << 32) - 1
_first, _last = operator.itemgetter(0), operator.itemgetter(1)
_V6_MAX = (1 << 128) - 1


def _merge(ranges: Iterable[Range]) -> tuple[Range, ...]:
    items = sorted(ranges)
    if len(items) < 2:
        return tuple(items)
    if all(b[0] > a[1] + 1 for a, b in itertools.pairwise(items)):
        # Already apart (node addresses mostly are): nothing to merge, no tuple to build.
        return tuple(items)
    merged: list[Range] = []
    current_first, current_last = items[0]
    for first, last in items:
        if first <= current_last + 1:
            if last > current_last:
                current_last = last
        else:
            merged.append((current_first, current_last))
            current_first, current_last = first, last
    merged.append((current_first, current_last))
    return tuple(merged)


def _contains(ranges: tuple[Range, ...], starts: tuple[int, ...], value: int) -> bool:
    index = bisect.bisect_right(starts, value) - 1
    return index >= 0 and ranges[index][1] >= value


def _overlaps(ranges: tuple[Range, ...], starts: tuple[int, ...], first: int, last: int) -> bool:
    index = bisect.bisect_right(starts, last) - 1
    return index >= 0 and ranges[index][1] >= first


def _covers(ranges: tuple[Range, ...], starts: tuple[int, ...], first: int, last: int) -> bool:
    index = bisect.bisect_right(starts, first) - 1
    return index >= 0 and ranges[index][1] >= last


def _subtract(ranges: tuple[Range, ...], removed: tuple[Range, ...]) -> list[Range]:
    result: list[Range] = []
    for first, last in ranges:
        current = first
        for r_first, r_last in removed:
            if r_last < current or r_first > last:
                continue
            if r_first > current:
                result.append((current, r_first - 1))
            current = max(current, r_last + 1)
            if current > last:
                break
        if current <= last:
            result.append((current, last))
    return result


def _ranges_overlap(
    a: tuple[Range, ...], a_starts: tuple[int, ...], b: tuple[Range, ...], b_starts: tuple[int, ...]
) -> bool:
    """Whether two sorted, merged range lists share an address: nothing when their spans are apart, else
    one lookup per range of the shorter list in the longer one."""
    if not a or not b or a[-1][1] < b[0][0] or b[-1][1] < a[0][0]:
        return False
    if len(a) < len(b):
        a, a_starts, b, b_starts = b, b_starts, a, a_starts
    return any(_overlaps(a, a_starts, first, last) for first, last in b)


def _without_range(
    ranges: tuple[Range, ...], starts: tuple[int, ...], first: int, last: int
) -> tuple[tuple[Range, ...], tuple[int, ...]]:
    """``ranges`` (sorted, merged) without ``first..last``: the ranges it overlaps lose that part."""
    low = bisect.bisect_right(starts, first) - 1
    if low < 0 or ranges[low][1] < first:
        low += 1
    high = bisect.bisect_right(starts, last)
    if low >= high:
        return ranges, starts
    pieces: list[Range] = []
    if ranges[low][0] < first:
        pieces.append((ranges[low][0], first - 1))
    if ranges[high - 1][1] > last:
        pieces.append((last + 1, ranges[high - 1][1]))
    return (*ranges[:low], *pieces, *ranges[high:]), (*starts[:low], *(p[0] for p in pieces), *starts[high:])


#: Up to this many ranges are added to a set one by one (:meth:`AddrSet.__or__`).
_FEW = 8


def _with_range(
    ranges: tuple[Range, ...], starts: tuple[int, ...], first: int, last: int
) -> tuple[tuple[Range, ...], tuple[int, ...]]:
    """``ranges`` (sorted, merged) with ``first..last`` added, merging the ranges it touches or adjoins."""
    low = bisect.bisect_right(starts, first) - 1
    if low >= 0 and ranges[low][1] + 1 >= first:
        first = ranges[low][0]
    else:
        low += 1
    high = bisect.bisect_right(starts, last + 1)
    if high > low:
        last = max(last, ranges[high - 1][1])
    return (*ranges[:low], (first, last), *ranges[high:]), (*starts[:low], first, *starts[high:])


class AddrSet:
    """An immutable set of IPv4 and IPv6 addresses."""

    # Range starts are tuples, not lists: tuples of integers are not tracked by the garbage collector, and a
    # tailnet holds tens of thousands of sets.
    __slots__ = ("_strings", "_v4_starts", "_v6_starts", "v4", "v6")

    def __init__(self, v4: Iterable[Range] = (), v6: Iterable[Range] = ()) -> None:
        self.v4 = _merge(v4)
        self.v6 = _merge(v6)
        self._v4_starts = tuple(r[0] for r in self.v4)
        self._v6_starts = tuple(r[0] for r in self.v6)
        self._strings: list[str] | None = None

    @classmethod
    def _of_merged(cls, v4: tuple[Range, ...], v6: tuple[Range, ...]) -> AddrSet:
        """A set of ranges that are sorted and merged already (no sorting, no merging)."""
        merged = cls.__new__(cls)
        merged.v4, merged._v4_starts = v4, tuple(r[0] for r in v4)
        merged.v6, merged._v6_starts = v6, tuple(r[0] for r in v6)
        merged._strings = None
        return merged

    @classmethod
    def _of_merged_with_starts(
        cls,
        v4: tuple[Range, ...],
        v4_starts: tuple[int, ...],
        v6: tuple[Range, ...],
        v6_starts: tuple[int, ...],
    ) -> AddrSet:
        merged = cls.__new__(cls)
        merged.v4, merged._v4_starts, merged.v6, merged._v6_starts = v4, v4_starts, v6, v6_starts
        merged._strings = None
        return merged

    @classmethod
    def of_address_keys(cls, keys: Iterable[tuple[int, int]]) -> AddrSet:
        """The set of these ``(version, integer)`` addresses."""
        keys = list(keys)
        v4 = [(value, value) for version, value in keys if version == 4]
        v6 = [(value, value) for version, value in keys if version == 6]
        if len(v4) < 2 and len(v6) < 2:
            return cls._of_merged(tuple(v4), tuple(v6))
        return cls(v4, v6)

    @classmethod
    def of(cls, networks: Iterable[IPNetwork | IPAddress]) -> AddrSet:
        v4: list[Range] = []
        v6: list[Range] = []
        for net in networks:
            bucket = v4 if net.version == 4 else v6
            if isinstance(net, ipaddress.IPv4Address | ipaddress.IPv6Address):
                value = int(net)
                bucket.append((value, value))
            else:
                bucket.append((int(net.network_address), int(net.broadcast_address)))
        return cls(v4, v6)

    @classmethod
    def union_of(cls, sets: Iterable[AddrSet]) -> AddrSet:
        v4: list[Range] = []
        v6: list[Range] = []
        for s in sets:
            v4.extend(s.v4)
            v6.extend(s.v6)
        return cls(v4, v6)

    def __bool__(self) -> bool:
        return bool(self.v4 or self.v6)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AddrSet) and self.v4 == other.v4 and self.v6 == other.v6

    def __hash__(self) -> int:
        return hash((self.v4, self.v6))

    def __repr__(self) -> str:
        return f"AddrSet({self.to_strings()!r})"

    def __or__(self, other: AddrSet) -> AddrSet:
        if len(other.v4) + len(other.v6) > _FEW:
            return AddrSet(self.v4 + other.v4, self.v6 + other.v6)
        # A node's addresses joining a large alias: splice them in rather than sort everything again.
        v4, v4_starts, v6, v6_starts = self.v4, self._v4_starts, self.v6, self._v6_starts
        for first, last in other.v4:
            v4, v4_starts = _with_range(v4, v4_starts, first, last)
        for first, last in other.v6:
            v6, v6_starts = _with_range(v6, v6_starts, first, last)
        merged = AddrSet.__new__(AddrSet)
        merged.v4, merged._v4_starts, merged.v6, merged._v6_starts = v4, v4_starts, v6, v6_starts
        merged._strings = None
        return merged

    def __sub__(self, other: AddrSet) -> AddrSet:
        if len(other.v4) + len(other.v6) > _FEW:
            return AddrSet(_subtract(self.v4, other.v4), _subtract(self.v6, other.v6))
        # A node's addresses leaving a large alias: cut them out rather than walk every range.
        v4, v4_starts, v6, v6_starts = self.v4, self._v4_starts, self.v6, self._v6_starts
        for first, last in other.v4:
            v4, v4_starts = _without_range(v4, v4_starts, first, last)
        for first, last in other.v6:
            v6, v6_starts = _without_range(v6, v6_starts, first, last)
        return AddrSet._of_merged_with_starts(v4, v4_starts, v6, v6_starts)

    def contains_any(self, keys: Iterable[tuple[int, int]]) -> bool:
        """Whether one of these ``(version, integer)`` addresses is in the set (a node's, mostly)."""
        for version, value in keys:
            if version == 4:
                if _contains(self.v4, self._v4_starts, value):
                    return True
            elif _contains(self.v6, self._v6_starts, value):
                return True
        return False

    def contains_ip(self, ip: IPAddress) -> bool:
        if ip.version == 4:
            return _contains(self.v4, self._v4_starts, int(ip))
        return _contains(self.v6, self._v6_starts, int(ip))

    def overlaps_network(self, net: IPNetwork) -> bool:
        first, last = int(net.network_address), int(net.broadcast_address)
        if net.version == 4:
            return _overlaps(self.v4, self._v4_starts, first, last)
        return _overlaps(self.v6, self._v6_starts, first, last)

    def covers_network(self, net: IPNetwork) -> bool:
        first, last = int(net.network_address), int(net.broadcast_address)
        if net.version == 4:
            return _covers(self.v4, self._v4_starts, first, last)
        return _covers(self.v6, self._v6_starts, first, last)

    def overlaps(self, other: AddrSet) -> bool:
        return _ranges_overlap(self.v4, self._v4_starts, other.v4, other._v4_starts) or _ranges_overlap(
            self.v6, self._v6_starts, other.v6, other._v6_starts
        )

    def issubset(self, other: AddrSet) -> bool:
        return all(_covers(other.v4, other._v4_starts, f, la) for f, la in self.v4) and all(
            _covers(other.v6, other._v6_starts, f, la) for f, la in self.v6
        )

    def is_single_address(self) -> bool:
        ranges = self.v4 + self.v6
        return len(ranges) == 1 and ranges[0][0] == ranges[0][1]

    def single_key(self) -> tuple[int, int] | None:
        """``(version, address)`` when the set is one address, else ``None``."""
        if len(self.v4) + len(self.v6) != 1:
            return None
        version, (first, last) = (4, self.v4[0]) if self.v4 else (6, self.v6[0])
        return (version, first) if first == last else None

    def ranges(self) -> list[tuple[int, int, int]]:
        """Every range as ``(version, first, last)``, IPv4 first."""
        return [(4, f, la) for f, la in self.v4] + [(6, f, la) for f, la in self.v6]

    def networks(self) -> list[IPNetwork]:
        """The smallest list of CIDR prefixes that together make up this set."""
        result: list[IPNetwork] = []
        for version, ranges in ((4, self.v4), (6, self.v6)):
            address_type = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
            for first, last in ranges:
                result.extend(ipaddress.summarize_address_range(address_type(first), address_type(last)))
        return result

    def networks_overlapping(self, networks: Sequence[IPNetwork]) -> list[IPNetwork]:
        """The prefixes of :meth:`networks` that overlap one of ``networks``.

        Only the ranges that can hold one are summarised: a router's filter needs the few prefixes of a
        capability grant that its routes share."""
        result: list[IPNetwork] = []
        for version, ranges in ((4, self.v4), (6, self.v6)):
            bounds = [
                (int(n.network_address), int(n.broadcast_address)) for n in networks if n.version == version
            ]
            if not bounds:
                continue
            address_type = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
            for first, last in ranges:
                if any(first <= b_last and b_first <= last for b_first, b_last in bounds):
                    summary = ipaddress.summarize_address_range(address_type(first), address_type(last))
                    result.extend(net for net in summary if any(net.overlaps(n) for n in networks))
        return result

    def to_strings(self) -> list[str]:
        """Render as Tailscale writes address sets: single IPs, CIDRs, or ``first-last`` ranges."""
        if self._strings is None:
            self._strings = range_texts(4, self.v4)
            if self.v6:
                self._strings += range_texts(6, self.v6)
        return list(self._strings)

    def shared_strings(self) -> list[str]:
        """:meth:`to_strings` without the copy: one list shared by every caller, who must not modify it."""
        if self._strings is None:
            self.to_strings()
        assert self._strings is not None
        return self._strings

    def prefix_strings(self) -> list[str]:
        """Render as CIDR prefixes, single addresses with their full length (as CapGrant Dsts want)."""
        out: list[str] = []
        for version, ranges in ((4, self.v4), (6, self.v6)):
            bits = 32 if version == 4 else 128
            for first, last in ranges:
                if first == last:
                    out.append(f"{range_text(version, first, first)}/{bits}")
                else:
                    address_type = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
                    summary = ipaddress.summarize_address_range(address_type(first), address_type(last))
                    out.extend(str(net) for net in summary)
        return out


def first_addresses(sets: Sequence[AddrSet], version: int) -> Iterator[int]:
    """The first address of every range of ``sets`` in one IP family (no call per set)."""
    return itertools.chain.from_iterable(map(_V4_STARTS if version == 4 else _V6_STARTS, sets))


def wide_ranges(sets: Sequence[AddrSet], version: int) -> list[Range]:
    """The ranges of ``sets`` in one IP family that hold more than one address (no call per set or range)."""
    ranges = list(itertools.chain.from_iterable(map(_V4 if version == 4 else _V6, sets)))
    return list(itertools.compress(ranges, map(operator.ne, map(_first, ranges), map(_last, ranges))))


_V4, _V6 = operator.attrgetter("v4"), operator.attrgetter("v6")
_V4_STARTS, _V6_STARTS = operator.attrgetter("_v4_starts"), operator.attrgetter("_v6_starts")


@functools.lru_cache(maxsize=1 << 16)
def single_address(version: int, address: int) -> AddrSet:
    """A set of one address, shared (sets are immutable): most filter destinations are one node address."""
    ranges, starts = ((address, address),), (address,)
    if version == 4:
        return AddrSet._of_merged_with_starts(ranges, starts, (), ())
    return AddrSet._of_merged_with_starts((), (), ranges, starts)


#: Runs of zero hextets in a ``:``-framed address text, longest first: the first found becomes ``::``.
_ZERO_RUNS = [":" + "0:" * length for length in range(8, 1, -1)]
_HEXTETS = ":".join(["%x"] * 8)
_UNPACK_HEXTETS = struct.Struct(">8H").unpack


def _v6_text(value: int) -> str:
    """``str(ipaddress.IPv6Address(value))`` in a fraction of its time: the first longest run of two or more
    zero hextets becomes ``::`` (RFC 5952). Addresses with 80 leading zero bits (IPv4-mapped and -compatible
    forms, which Python versions write differently) are left to ``ipaddress``."""
    if value >> 48 == 0:
        return str(ipaddress.IPv6Address(value))
    # %-formatting: a third faster than str.format here, and this runs for every IPv6 address of a tailnet.
    framed = ":" + (_HEXTETS % _UNPACK_HEXTETS(value.to_bytes(16, "big"))) + ":"
    if ":0:0:" in framed:
        for run in _ZERO_RUNS:
            at = framed.find(run)
            if at >= 0:
                return framed[1:at] + "::" + framed[at + len(run) : -1]
    return framed[1:-1]


def _v4_text(value: int) -> str:
    """What ``str(IPv4Address(value))`` gives, without building one."""
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


#: Each range's text per IP family, shared by every set and filter listing it. Bounded: a table that grows
#: past :data:`_MAX_TEXTS` entries is emptied and refilled as texts are asked for again.
_TEXTS: dict[int, dict[Range, str]] = {4: {}, 6: {}}
_MAX_TEXTS = 1 << 17


def _render(version: int, first: int, last: int) -> str:
    if first == last:
        return _v4_text(first) if version == 4 else _v6_text(first)
    start = range_text(version, first, first)
    size = last - first + 1
    if size & (size - 1) == 0 and first % size == 0:
        bits = (32 if version == 4 else 128) - size.bit_length() + 1
        return f"{start}/{bits}"
    return f"{start}-{range_text(version, last, last)}"


def range_texts(version: int, ranges: Sequence[Range]) -> list[str]:
    """Each range as Tailscale writes it (an address, a CIDR or ``first-last``), in order.

    Texts come from :data:`_TEXTS` (one dictionary lookup per range, no call): every filter lists node
    addresses, rule sources list hundreds, and ``ipaddress`` formats IPv6 slowly."""
    texts = _TEXTS[version]
    try:
        return list(map(texts.__getitem__, ranges))
    except KeyError:
        pass  # some are new: render those
    if len(texts) > _MAX_TEXTS:
        texts.clear()
    found = list(map(texts.get, ranges))
    for index, text in enumerate(found):
        if text is None:
            first, last = ranges[index]
            found[index] = texts[(first, last)] = _render(version, first, last)
    return found  # type: ignore[return-value]  # no None is left


def range_text(version: int, first: int, last: int) -> str:
    """One range's text (:func:`range_texts`)."""
    text = _TEXTS[version].get((first, last))
    return text if text is not None else range_texts(version, ((first, last),))[0]


def address_text(ip: IPAddress) -> str:
    """``str(ip)``, formatted once per address for every filter and peer map that lists it."""
    value = int(ip)
    return range_text(ip.version, value, value)


def parse_address(text: str) -> IPAddress:
    """``ipaddress.ip_address(text)``; canonical text (what the server stores) is read by ``inet_pton``
    instead, and its text is kept for :func:`range_texts`.

    Text that ``inet_pton`` reads and that is the canonical form of what it read is text ``ipaddress``
    writes, so reads back to the same address; anything else goes to ``ipaddress``, whose errors stand.
    """
    ipv6 = ":" in text
    try:
        packed = socket.inet_pton(socket.AF_INET6 if ipv6 else socket.AF_INET, text)
    except (OSError, ValueError):
        packed = None
    if packed is not None:
        value = int.from_bytes(packed, "big")
        canonical = range_text(6 if ipv6 else 4, value, value)
        if canonical == text:
            return ipaddress.IPv6Address(value) if ipv6 else ipaddress.IPv4Address(value)
    try:
        # No failed IPv4 attempt on every IPv6 address (an exception each), as ip_address makes.
        return ipaddress.IPv6Address(text) if ipv6 else ipaddress.IPv4Address(text)
    except ValueError:
        return ipaddress.ip_address(text)


def parse_addr_set(text: str) -> AddrSet:
    """Parse one Tailscale address expression: ``*``, an IP, a CIDR or ``first-last``."""
    text = text.strip()
    if text == "*":
        return EVERYTHING
    if "-" in text and "/" not in text:
        first_text, _, last_text = text.partition("-")
        first = ipaddress.ip_address(first_text)
        last = ipaddress.ip_address(last_text)
        if first.version != last.version:
            raise ValueError(f"mixed address families in range {text!r}")
        if first.version == 4:
            return AddrSet(v4=[(int(first), int(last))])
        return AddrSet(v6=[(int(first), int(last))])
    return AddrSet.of([ipaddress.ip_network(text, strict=False)])


EMPTY = AddrSet()
EVERYTHING = AddrSet(v4=[(0, _V4_MAX)], v6=[(0, _V6_MAX)])
CGNAT = ipaddress.ip_network("100.64.0.0/10")
TAILSCALE_ULA = ipaddress.ip_network("fd7a:115c:a1e0::/48")
CHROMEOS_VM_RANGE = ipaddress.ip_network("100.115.92.0/23")
#: What the ``*`` alias means as a source: every address Tailscale can assign.
TAILNET_ADDRESSES = AddrSet.of([CGNAT, TAILSCALE_ULA]) - AddrSet.of([CHROMEOS_VM_RANGE])
#: ``autogroup:internet``: every public address, i.e. all addresses minus private,
#: link-local, CGNAT, multicast and other special-purpose ranges.
_NOT_INTERNET_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/3",
]
_INTERNET_V6 = ["2000::/3"]
_NOT_INTERNET_V6 = ["fc00::/7"]
INTERNET = (AddrSet.of(ipaddress.ip_network(n) for n in ["0.0.0.0/0", *_INTERNET_V6])) - AddrSet.of(
    ipaddress.ip_network(n) for n in _NOT_INTERNET_V4 + _NOT_INTERNET_V6
)
ALL_V4 = ipaddress.ip_network("0.0.0.0/0")
ALL_V6 = ipaddress.ip_network("::/0")
