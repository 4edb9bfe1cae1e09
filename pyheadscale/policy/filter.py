"""Packet filter compilation: ACLs and grants to ``tailcfg.FilterRule``s.

Compilation happens in two stages. :func:`compile_grant` resolves every
grant (:func:`policy_grants` turns ACLs into grants) once per policy and tailnet into
:class:`CompiledGrant`s: global rules plus the inputs of the per-node parts
(``autogroup:self`` and ``via``). :func:`self_rules` (the same for every
device of one user) and :func:`via_rules` give one node's own rules;
:mod:`pyheadscale.policy.reduce` keeps the parts of them whose destination
is that node.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pyheadscale.policy.aliases import Alias, AliasKind, Autogroup, Resolver
from pyheadscale.policy.memo import cached_attribute
from pyheadscale.policy.model import Grant, Policy, ProtocolPorts
from pyheadscale.policy.netset import (
    EVERYTHING,
    INTERNET,
    AddrSet,
    parse_addr_set,
    range_text,
    single_address,
)
from pyheadscale.policy.ports import ALL_PORTS, PortRange, protocol_numbers
from pyheadscale.policy.types import PolicyNode
from pyheadscale.tailcfg import filter as wire

#: The filter of a tailnet without ACLs or grants: everything may talk to everything.
ALLOW_ALL_RULES: list[wire.FilterRule] = [
    {"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}
]

#: Capabilities that imply a reverse companion capability for the other side.
_COMPANION_CAPS = (
    ("tailscale.com/cap/drive", "tailscale.com/cap/drive-sharer"),
    ("tailscale.com/cap/relay", "tailscale.com/cap/relay-target"),
)


@dataclass(frozen=True, slots=True)
class DstPort:
    """One ``NetPortRange``: an address expression, the addresses it means, and a port range.

    ``single`` is ``(version, address)`` when the destination is one address (most are: a node's own).
    Slotted, with its wire form made at once: a large tailnet holds tens of thousands of these.
    """

    ip: str
    addresses: AddrSet
    ports: PortRange
    single: tuple[int, int] | None = field(init=False, compare=False, repr=False)
    _wire: wire.NetPortRange = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "single", self.addresses.single_key())
        object.__setattr__(self, "_wire", {"IP": self.ip, "Ports": _ports_wire(self.ports)})

    def to_wire(self) -> wire.NetPortRange:
        """Made once and shared by every filter holding this destination: callers must not modify it."""
        return self._wire


@functools.lru_cache(maxsize=1 << 12)
def _ports_wire(ports: PortRange) -> wire.PortRange:
    """One shared ``PortRange`` wire dict per port range (callers must not modify it)."""
    return ports.to_wire()


@dataclass(frozen=True)
class CapGrant:
    destinations: AddrSet
    cap_map: dict[str, Any]

    def to_wire(self) -> wire.CapGrant:
        return {"Dsts": self.destinations.prefix_strings(), "CapMap": self.cap_map}


@dataclass
class Rule:
    """A filter rule with its sources kept as an address set for matching."""

    sources: AddrSet
    dst_ports: list[DstPort] = field(default_factory=list)
    protocols: tuple[int, ...] = ()
    cap_grants: list[CapGrant] = field(default_factory=list)

    def to_wire(self) -> wire.FilterRule:
        return self.wire_with(self.dst_ports, self.cap_grants)

    def wire_with(self, dst_ports: list[DstPort], cap_grants: list[CapGrant]) -> wire.FilterRule:
        """This rule's wire form with only ``dst_ports`` and ``cap_grants`` (a node's filter holds the parts
        that reach it).

        Its ``SrcIPs`` and ``IPProto`` lists are shared by every filter holding this rule (thousands of
        nodes' filters name the same sources): callers must not modify them.
        """
        out: wire.FilterRule = {"SrcIPs": _source_strings(self.sources)}
        if dst_ports:
            out["DstPorts"] = [d.to_wire() for d in dst_ports]
        if self.protocols:
            out["IPProto"] = _protocol_list(self.protocols)
        if cap_grants:
            out["CapGrant"] = [c.to_wire() for c in cap_grants]
        return out

    @cached_attribute
    def destinations_by_address(self) -> tuple[dict[tuple[int, int], list[int]], list[int]]:
        """The positions in ``dst_ports`` of its one-address destinations by that address, and of the others:
        a node's filter looks its own addresses up instead of checking every destination (an
        ``autogroup:self`` rule lists every device of its user)."""
        by_address: dict[tuple[int, int], list[int]] = {}
        wide: list[int] = []
        for j, dst in enumerate(self.dst_ports):
            if dst.single is None:
                wide.append(j)
            else:
                by_address.setdefault(dst.single, []).append(j)
        return by_address, wide

    def destinations(self) -> AddrSet:
        """Every address this rule lets traffic (or capabilities) reach."""
        return AddrSet.union_of(
            [*(d.addresses for d in self.dst_ports), *(c.destinations for c in self.cap_grants)]
        )


_EVERYTHING_STRINGS = ["*"]


def _source_strings(sources: AddrSet) -> list[str]:
    return _EVERYTHING_STRINGS if sources == EVERYTHING else sources.shared_strings()


@functools.lru_cache(maxsize=256)
def _protocol_list(protocols: tuple[int, ...]) -> list[int]:
    """One shared list per protocol tuple (a handful exist)."""
    return list(protocols)


@dataclass
class SelfPart:
    """The ``autogroup:self`` half of a grant: resolved per destination node's owner."""

    sources: AddrSet
    ip: list[ProtocolPorts]
    app: dict[str, list[Any]] | None


@dataclass
class ViaPart:
    """A ``via`` grant: only routers carrying one of ``tags`` receive its rules."""

    tags: list[str]
    destinations: list[AddrSet]
    internet: bool
    ip: list[ProtocolPorts]
    sources: AddrSet


@dataclass
class CompiledGrant:
    grant: Grant
    rules: list[Rule] = field(default_factory=list)
    self_part: SelfPart | None = None
    via_part: ViaPart | None = None


def policy_grants(policy: Policy) -> list[Grant]:
    """All grants of a policy, with each ACL destination turned into its own grant."""
    grants = list(policy.grants or [])
    for acl in policy.acls or []:
        for i, destination in enumerate(acl.destinations):
            grants.append(
                Grant(
                    path=(*acl.path, "dst", i),
                    sources=acl.sources,
                    destinations=[destination.alias],
                    ip=[ProtocolPorts(acl.proto, destination.ports)],
                    app=None,
                    via=[],
                )
            )
    return grants


def allow_all_grant() -> Grant:
    """What a policy without ``acls`` and ``grants`` means: every tailnet address may reach everything."""
    wildcard = Alias(AliasKind.WILDCARD, "*")
    return Grant(
        path=(),
        sources=[wildcard],
        destinations=[wildcard],
        ip=[ProtocolPorts("", (ALL_PORTS,))],
        app=None,
        via=[],
    )


def source_addresses(sources: Iterable[Alias], resolver: Resolver) -> AddrSet:
    """A rule's source set: ``*`` adds approved subnet routes, ``autogroup:danger-all`` is everything."""
    sources = list(sources)
    if any(s.is_autogroup(Autogroup.DANGER_ALL) for s in sources):
        return EVERYTHING
    resolved = resolver.resolve_all(s for s in sources if not s.is_autogroup(Autogroup.SELF))
    if any(s.kind is AliasKind.WILDCARD for s in sources):
        resolved = resolved | AddrSet.of(resolver.tailnet.approved_subnet_routes())
    return resolved


def _dst_ports(destination: Alias, addresses: AddrSet, ports: Iterable[PortRange]) -> list[DstPort]:
    if destination.kind is AliasKind.WILDCARD:
        return [DstPort("*", EVERYTHING, p) for p in ports]
    out: list[DstPort] = []
    ports = list(ports)
    for version, first, last in addresses.ranges():
        if first == last:
            # Most destinations are single node addresses: no ipaddress objects for those.
            out.extend(_single_dst_port(version, first, p) for p in ports)
            continue
        whole = AddrSet(v4=[(first, last)]) if version == 4 else AddrSet(v6=[(first, last)])
        for network in whole.networks():
            single = network.num_addresses == 1
            text = str(network.network_address) if single else str(network)
            part = AddrSet.of([network])
            out.extend(DstPort(text, part, p) for p in ports)
    return out


@functools.lru_cache(maxsize=1 << 16)
def _single_dst_port(version: int, address: int, ports: PortRange) -> DstPort:
    """One address and port range, shared by every grant naming them (with the wire form it caches)."""
    return DstPort(range_text(version, address, address), single_address(version, address), ports)


def companion_rules(cap_map: dict[str, Any], granted_to: AddrSet, granted_on: AddrSet) -> list[Rule]:
    """Reverse rules for capabilities that come in pairs (drive/drive-sharer, relay/relay-target)."""
    return [
        Rule(sources=granted_on, cap_grants=[CapGrant(granted_to, {companion: None})])
        for original, companion in _COMPANION_CAPS
        if original in cap_map
    ]


def compile_grant(grant: Grant, resolver: Resolver) -> CompiledGrant:
    compiled = CompiledGrant(grant)
    if not grant.sources or not grant.destinations:
        return compiled
    sources = source_addresses(grant.sources, resolver)
    if grant.via:
        if (grant.ip or grant.app) and sources:
            via_destinations = [
                resolver.resolve(d) for d in grant.destinations if not d.is_autogroup(Autogroup.INTERNET)
            ]
            compiled.via_part = ViaPart(
                tags=grant.via,
                destinations=via_destinations,
                internet=any(d.is_autogroup(Autogroup.INTERNET) for d in grant.destinations),
                ip=grant.ip,
                sources=sources,
            )
        return compiled
    other = [d for d in grant.destinations if not d.is_autogroup(Autogroup.SELF)]
    if len(other) != len(grant.destinations):
        compiled.self_part = SelfPart(sources=sources, ip=grant.ip, app=grant.app)
    if not other or not sources:
        return compiled
    for entry in grant.ip:
        dst_ports: list[DstPort] = []
        for destination in other:
            if destination.is_autogroup(Autogroup.INTERNET):
                continue
            dst_ports.extend(_dst_ports(destination, resolver.resolve(destination), entry.ports))
        if dst_ports:
            compiled.rules.append(Rule(sources, dst_ports, protocol_numbers(entry.protocol)))
    if grant.app:
        cap_grants = [CapGrant(resolver.resolve(d), grant.app) for d in other]
        cap_grants = [c for c in cap_grants if c.destinations]
        if cap_grants:
            compiled.rules.append(Rule(sources, cap_grants=cap_grants))
            granted_on = AddrSet.union_of(c.destinations for c in cap_grants)
            if any(d.kind is AliasKind.WILDCARD for d in other):
                granted_on = granted_on | AddrSet.of(resolver.tailnet.approved_subnet_routes())
            # The reverse grant goes to the source nodes themselves, not to the subnets ``*`` adds.
            granted_to = resolver.resolve_all(s for s in grant.sources if not s.is_autogroup(Autogroup.SELF))
            compiled.rules.extend(companion_rules(grant.app, granted_to, granted_on))
    return compiled


def self_rules(part: SelfPart, node: PolicyNode, resolver: Resolver) -> list[Rule]:
    """``autogroup:self`` rules for ``node``: between the devices of its owner only."""
    if node.is_tagged:
        return []
    tailnet = resolver.tailnet
    owner = tailnet.node_user_id(node)
    if owner is None:
        return []
    same_user = tailnet.nodes_of_users({owner})
    sources = AddrSet.union_of(n.addr_set for n in same_user if n.has_ip_in(part.sources))
    if not sources:
        return []
    destinations = AddrSet.union_of(n.addr_set for n in same_user)
    rules: list[Rule] = []
    keys = [key for n in same_user for key in n.address_keys]
    for entry in part.ip:
        dst_ports = [_single_dst_port(version, value, p) for version, value in keys for p in entry.ports]
        rules.append(Rule(sources, dst_ports, protocol_numbers(entry.protocol)))
    if part.app:
        cap_grants = [CapGrant(n.addr_set, part.app) for n in same_user]
        rules.append(Rule(sources, cap_grants=cap_grants))
        rules.extend(companion_rules(part.app, sources, destinations))
    return rules


def via_served(part: ViaPart, node: PolicyNode) -> list[AddrSet]:
    """The destinations of a ``via`` grant that ``node`` routes for (none unless it has a via tag)."""
    if not any(tag in node.tags for tag in part.tags):
        return []
    served: list[AddrSet] = [
        d for d in part.destinations if any(d.overlaps_network(r) for r in node.subnet_routes)
    ]
    if part.internet and node.is_exit_node:
        served.append(INTERNET)
    return served


def via_rules(part: ViaPart, node: PolicyNode) -> list[Rule]:
    """Rules a ``via`` router needs for the destinations its approved routes serve."""
    served = via_served(part, node)
    rules: list[Rule] = []
    for entry in part.ip:
        dst_ports = [
            DstPort(text, parse_addr_set(text), p)
            for s in served
            for text in s.to_strings()
            for p in entry.ports
        ]
        rules.append(Rule(part.sources, dst_ports, protocol_numbers(entry.protocol)))
    return rules
