"""Ports and IP protocols as written in policies (``tag:web:80,443``, ``tcp:8000-8999``, ``icmp``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pyheadscale.tailcfg import filter as wire


@dataclass(frozen=True, order=True)
class PortRange:
    """An inclusive port range, as in ``tailcfg.PortRange``."""

    first: int
    last: int

    def to_wire(self) -> wire.PortRange:
        return {"First": self.first, "Last": self.last}


ALL_PORTS = PortRange(0, 65535)

#: Protocol names Tailscale understands, with their IANA numbers.
PROTOCOL_NUMBERS: dict[str, int] = {
    "icmp": 1,
    "igmp": 2,
    "ipv4": 4,
    "ip-in-ip": 4,
    "tcp": 6,
    "egp": 8,
    "igp": 9,
    "udp": 17,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "ipv6-icmp": 58,
    "sctp": 132,
    "fc": 133,
}
#: What a rule without ``IPProto`` matches.
DEFAULT_PROTOCOLS = (6, 17, 1, 58)
_PORTED_PROTOCOLS = frozenset({"", "tcp", "udp", "sctp", "6", "17", "132"})


def parse_port(text: str) -> int:
    if not text.isdigit():
        raise ValueError("invalid first integer")
    port = int(text)
    if port > 65535:
        raise ValueError("port number out of range")
    return port


def parse_ports(text: str) -> tuple[PortRange, ...]:
    """Parse ``*``, ``22``, ``80,443`` or ``8000-8999`` (and lists of those)."""
    if text == "*":
        return (ALL_PORTS,)
    ranges: list[PortRange] = []
    for part in text.split(","):
        if "-" in part:
            bounds = [b for b in part.split("-") if b]
            if len(bounds) != 2:
                raise ValueError("invalid port range format")
            first, last = parse_port(bounds[0]), parse_port(bounds[1])
            if first > last:
                raise ValueError("invalid port range: first port is greater than last port")
            ranges.append(PortRange(first, last))
        else:
            port = parse_port(part)
            if port < 1:
                raise ValueError("first port must be >0, or use '*' for wildcard")
            ranges.append(PortRange(port, port))
    return tuple(ranges)


def split_destination(text: str) -> tuple[str, str]:
    """Split ``alias:ports`` at the last colon, allowing ``[v6addr]:port``."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError("square brackets are only valid around IPv6 addresses")
        host = text[1:close]
        try:
            is_v6 = ipaddress.ip_address(host).version == 6
        except ValueError:
            is_v6 = False
        rest = text[close + 1 :]
        if not is_v6 or not rest or rest[0] not in ":/":
            raise ValueError("square brackets are only valid around IPv6 addresses")
        text = host + rest
    alias, colon, ports = text.rpartition(":")
    if not colon:
        raise ValueError("destination must be of the form alias:ports")
    if not alias:
        raise ValueError("destination cannot start with a colon")
    if not ports:
        raise ValueError("destination cannot end with a colon")
    return alias, ports


def parse_destination(text: str) -> tuple[str, tuple[PortRange, ...]]:
    """Parse an ACL destination into alias text and port ranges."""
    alias, ports_text = split_destination(text)
    try:
        ports = parse_ports(ports_text)
    except ValueError as exc:
        raise ValueError(f"port range {ports_text!r}: {exc}") from None
    return alias, ports


def parse_protocol(text: str) -> str:
    """Normalise an ACL ``proto``: lower-case names, known numbers to names; ``""`` is the default."""
    name = text.lower()
    if name == "*":
        raise ValueError('proto name "*" not known; use protocol number 0-255 or protocol name')
    if name == "" or name in PROTOCOL_NUMBERS:
        return name
    if not name.isdigit():
        raise ValueError(f"invalid protocol {text!r}: must be a known protocol name or number 0-255")
    if name == "0" or name.startswith("0"):
        raise ValueError(f"leading 0 not permitted in protocol number {text!r}")
    number = int(name)
    if number > 255:
        raise ValueError(f"protocol number {number} out of range (0-255)")
    for known, known_number in PROTOCOL_NUMBERS.items():
        if known_number == number:
            return known
    return name


def parse_protocol_ports(text: str) -> tuple[str, tuple[PortRange, ...]]:
    """Parse a grant ``ip`` entry: ``*``, ``22``, ``tcp:22``, ``icmp:*``..."""
    if text == "*":
        return "*", (ALL_PORTS,)
    if ":" not in text:
        try:
            return "*", parse_ports(text)
        except ValueError as exc:
            raise ValueError(f"port range {text!r}: {exc}") from None
    parts = text.split(":")
    if len(parts) != 2:
        raise ValueError(f"expected only one colon in {text!r}")
    protocol = parse_protocol(parts[0])
    try:
        ports = parse_ports(parts[1])
    except ValueError as exc:
        raise ValueError(f"port range {parts[1]!r}: {exc}") from None
    return protocol, ports


def protocol_numbers(protocol: str) -> tuple[int, ...]:
    """``IPProto`` for a protocol; empty means "the default" (TCP, UDP, ICMP, ICMPv6) or, for ``*``, all."""
    if protocol in ("", "*"):
        return ()
    if protocol in PROTOCOL_NUMBERS:
        return (PROTOCOL_NUMBERS[protocol],)
    return (int(protocol),)


def protocol_allows_ports(protocol: str) -> bool:
    return protocol in _PORTED_PROTOCOLS
