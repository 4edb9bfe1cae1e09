"""The packet filter a node enforces, as the map carries it: tailcfg.FilterRule.

The policy engine (pyheadscale/policy/filter.py) compiles it, the mapper puts it in MapResponse.PacketFilters
(or PacketFilter). A FilterRule matches or does not: a packet is allowed when any rule admits it, so the order
of rules does not matter.
"""

from typing import Any, NotRequired, TypedDict


class PortRange(TypedDict):
    First: int
    Last: int
    """Inclusive; 0-65535 is every port."""


class NetPortRange(TypedDict):
    """A destination: an address, prefix, range or "*", and a port range on it."""

    IP: str
    Ports: PortRange


class CapGrant(TypedDict):
    """Application capabilities granted to the rule's sources on these destination prefixes."""

    Dsts: list[str]
    CapMap: dict[str, Any]


class FilterRule(TypedDict):
    """Sources (addresses, prefixes or "*") and what they may reach: ports, or application capabilities."""

    SrcIPs: list[str]
    DstPorts: NotRequired[list[NetPortRange]]
    IPProto: NotRequired[list[int]]
    """IP protocol numbers; absent means TCP, UDP and ICMP."""
    CapGrant: NotRequired[list[CapGrant]]
