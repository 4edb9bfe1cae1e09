"""The policy a node enforces, as the map carries it: tailcfg.FilterRule (packets) and tailcfg.SSHPolicy.

The policy engine (pyheadscale/policy/) compiles these; the mapper puts them in MapResponse.PacketFilter(s)
and MapResponse.SSHPolicy. A FilterRule matches or does not: a packet is allowed when any rule admits it, so
the order of rules does not matter.
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


class SSHPolicy(TypedDict):
    """Tailscale SSH: the rules a node's SSH server applies, first match wins (keys are Go's JSON tags)."""

    rules: list[dict[str, Any]]
