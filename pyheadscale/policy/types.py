"""Engine-level input and output types shared by the policy engine and the server.

The server's own database models stay out of the policy engine: it hands the
engine these small value types and receives plain dicts in Tailscale's wire
shapes (``tailcfg.FilterRule``, ``tailcfg.SSHPolicy``, ``tailcfg.NodeCapMap``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyheadscale.policy.hujson import Position
from pyheadscale.policy.memo import cached_attribute
from pyheadscale.policy.netset import (
    AddrSet,
    IPAddress,
    IPNetwork,
    address_text,
    parse_address,
)

EXIT_ROUTES = frozenset({ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")})


class PolicyError(ValueError):
    """The policy is malformed or was rejected; ``str()`` names the entry and its position."""

    def __init__(self, message: str, entry: str | None = None, position: Position | None = None) -> None:
        where = " ".join(part for part in (entry, f"(line {position})" if position else None) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.message = message
        self.entry = entry
        self.position = position


@dataclass(frozen=True)
class PolicyUser:
    """A tailnet user as the policy sees it.

    ``email`` only when it can be relied on (set by an operator, or verified by the identity provider);
    ``provider_id`` the identity provider's identifier (issuer/subject); ``name_from_provider`` when the
    name was chosen at the identity provider rather than by an operator.
    """

    id: int
    name: str
    email: str = ""
    provider_id: str = ""
    name_from_provider: bool = False


@dataclass(frozen=True)
class PolicyNode:
    """A node as the policy sees it.

    ``user`` is the owning user's name and ``None`` for tagged nodes (tags
    replace user ownership). ``routable_ips`` are the routes the node
    advertises, ``approved_routes`` the ones the server has approved.
    """

    id: int
    hostname: str
    user: str | None
    user_id: int | None
    tags: Sequence[str] = ()
    ipv4: str | None = None
    ipv6: str | None = None
    routable_ips: Sequence[str] = ()
    approved_routes: Sequence[str] = ()

    def __post_init__(self) -> None:
        # Accept lists from callers but store tuples so nodes stay hashable.
        object.__setattr__(self, "tags", tuple(self.tags))
        object.__setattr__(self, "routable_ips", tuple(self.routable_ips))
        object.__setattr__(self, "approved_routes", tuple(self.approved_routes))

    @property
    def is_tagged(self) -> bool:
        return bool(self.tags)

    @cached_attribute
    def ips(self) -> tuple[IPAddress, ...]:
        return tuple(parse_address(a) for a in (self.ipv4, self.ipv6) if a)

    @cached_attribute
    def address_keys(self) -> tuple[tuple[int, int], ...]:
        """Its addresses as ``(version, integer)``, in order (IPv4 first)."""
        return tuple((ip.version, int(ip)) for ip in self.ips)

    @cached_attribute
    def ip_keys(self) -> frozenset[tuple[int, int]]:
        """Its addresses as ``(version, integer)``, for set lookups."""
        return frozenset(self.address_keys)

    @cached_attribute
    def routes_nothing(self) -> bool:
        """Neither a subnet router nor an exit node: only its own addresses reach it."""
        return not self.subnet_routes and not self.exit_routes

    @cached_attribute
    def addr_set(self) -> AddrSet:
        return AddrSet.of_address_keys(self.address_keys)

    @cached_attribute
    def reachable_addresses(self) -> AddrSet:
        """Its own addresses and its approved subnet routes: what a rule's destination must overlap to reach
        it (as an exit node it is also reached through the internet)."""
        if not self.subnet_routes:
            return self.addr_set
        return self.addr_set | AddrSet.of(self.subnet_routes)

    @cached_attribute
    def prefix_texts(self) -> tuple[str, ...]:
        """Its addresses as one-address prefixes (``100.64.0.1/32``), made once: every peer map lists them."""
        return tuple(f"{address_text(ip)}/{32 if ip.version == 4 else 128}" for ip in self.ips)

    @cached_attribute
    def plain_view(self) -> PeerView:
        """How most peers see this node: its own addresses, no routes.

        Shared by every viewer's peer map rather than one copy per viewer, which was O(tailnet²) objects.
        """
        return PeerView(list(self.prefix_texts), [])

    @cached_attribute
    def subnet_routes(self) -> tuple[IPNetwork, ...]:
        """Approved routes that are advertised and are not exit routes."""
        advertised = {ipaddress.ip_network(r, strict=False) for r in self.routable_ips}
        approved = [ipaddress.ip_network(r, strict=False) for r in self.approved_routes]
        return tuple(r for r in approved if r in advertised and r not in EXIT_ROUTES)

    @cached_attribute
    def exit_routes(self) -> tuple[IPNetwork, ...]:
        """Approved and advertised exit routes (``0.0.0.0/0``, ``::/0``)."""
        advertised = {ipaddress.ip_network(r, strict=False) for r in self.routable_ips}
        approved = [ipaddress.ip_network(r, strict=False) for r in self.approved_routes]
        return tuple(r for r in approved if r in advertised and r in EXIT_ROUTES)

    @property
    def is_exit_node(self) -> bool:
        return bool(self.exit_routes)

    def has_ip_in(self, addresses: AddrSet) -> bool:
        return addresses.contains_any(self.address_keys)


@dataclass(frozen=True)
class PeerView:
    """What a node learns about one peer: the addresses to route to it."""

    allowed_ips: list[str] = field(default_factory=list)
    primary_routes: list[str] = field(default_factory=list)
