"""A node's packet filter: the parts of compiled rules whose destination is that node.

A rule reaches a node through its own addresses, the subnet routes it serves
as a router, or the internet when it is an exit node. :func:`reduce_for_node`
checks a few rules one by one (a node's own ``autogroup:self`` and ``via``
rules); the :class:`DestinationIndex` holds every grant's global rules by
destination address, so a node's filter looks up its own addresses instead
of scanning all rules, and a recompiled grant re-indexes its own rules only.
Both give the wire form (``tailcfg.FilterRule``) directly.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from pyheadscale.policy.filter import CapGrant, DstPort, Rule
from pyheadscale.policy.netset import INTERNET, AddrSet
from pyheadscale.policy.types import PolicyNode
from pyheadscale.tailcfg import filter as wire

#: A wide destination of at most this many addresses is also indexed under each of them, for the filters of
#: nodes that route nothing (a tag's nodes with adjacent addresses make such small ranges).
SMALL_WIDE = 64

#: A rule's place among all global rules: (grant index, rule index within the grant).
RuleKey = tuple[int, int]
#: An address as (IP version, integer).
AddressKey = tuple[int, int]


def _dst_targets_node(dst: AddrSet, node: PolicyNode) -> bool:
    if node.has_ip_in(dst):
        return True
    if any(dst.overlaps_network(route) for route in node.subnet_routes):
        return True
    return node.is_exit_node and dst.issubset(INTERNET)


def _reduce_capabilities(rule: Rule, node: PolicyNode) -> list[CapGrant]:
    cap_grants = []
    reachable = node.reachable_addresses
    for grant in rule.cap_grants:
        if not grant.destinations.overlaps(reachable):
            continue  # neither one of its addresses nor one of its routes: most grants, for most nodes
        if node.routes_nothing and node.addr_set.issubset(grant.destinations):
            cap_grants.append(CapGrant(node.addr_set, grant.cap_map))  # all of its own addresses, no route
            continue
        own_ips = [ip for ip in node.ips if grant.destinations.contains_ip(ip)]
        routes = [r for r in node.subnet_routes if grant.destinations.overlaps_network(r)]
        if not own_ips and not routes:
            continue
        # A router keeps the whole destination prefix it serves, not just its own address.
        served = grant.destinations.networks_overlapping(routes)
        cap_grants.append(CapGrant(AddrSet.of([*own_ips, *served]), grant.cap_map))
    return cap_grants


def _ports_reaching(rule: Rule, node: PolicyNode) -> list[DstPort]:
    """The destinations of ``rule`` that reach ``node``, in rule order. Only its own addresses reach a node
    that routes nothing: its one-address destinations are looked up under them, not compared one by one."""
    if not node.routes_nothing:
        return [d for d in rule.dst_ports if _dst_targets_node(d.addresses, node)]
    by_address, wide = rule.destinations_by_address
    found = [j for key in node.ip_keys for j in by_address.get(key, ())]
    found += [j for j in wide if _dst_targets_node(rule.dst_ports[j].addresses, node)]
    if len(found) > 1:
        found.sort()
    return [rule.dst_ports[j] for j in found]


def reduce_for_node(rules: Iterable[Rule], node: PolicyNode) -> list[wire.FilterRule]:
    """The destinations of ``rules`` that are ``node`` itself, or that it routes to, in rule order."""
    reduced: list[wire.FilterRule] = []
    for rule in rules:
        if rule.cap_grants:
            cap_grants = _reduce_capabilities(rule, node)
            if cap_grants:
                reduced.append(rule.wire_with([], cap_grants))
            continue
        dst_ports = _ports_reaching(rule, node)
        if dst_ports:
            reduced.append(rule.wire_with(dst_ports, []))
    return reduced


class _GrantEntries:
    """What one grant's rules put into the index, so that replacing them removes exactly that."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self.singles: dict[AddressKey, list[tuple[int, int]]] = {}
        self.wide: list[tuple[int, int]] = []
        # The wide destinations by each of their addresses when they have few, and the others.
        self.small_wide: dict[AddressKey, list[tuple[int, int]]] = {}
        self.large_wide: list[tuple[int, int]] = []
        self.capabilities: list[int] = []
        self.capability_singles: dict[AddressKey, list[int]] = {}
        self.wide_capabilities: list[tuple[int, AddrSet]] = []
        for r, rule in enumerate(rules):
            if rule.cap_grants:
                self._index_capability(r, rule)
                continue
            for j, dst in enumerate(rule.dst_ports):
                single = dst.single
                if single is not None:
                    self.singles.setdefault(single, []).append((r, j))
                    continue
                self.wide.append((r, j))
                ranges = dst.addresses.ranges()
                if sum(last - first + 1 for _, first, last in ranges) > SMALL_WIDE:
                    self.large_wide.append((r, j))
                    continue
                for version, first, last in ranges:
                    for value in range(first, last + 1):
                        self.small_wide.setdefault((version, value), []).append((r, j))

    def _index_capability(self, r: int, rule: Rule) -> None:
        """Capability rules by the single addresses they reach, so a node's filter checks only its own."""
        self.capabilities.append(r)
        destinations = rule.destinations()
        for _, first, last in destinations.ranges():
            if first != last:
                self.wide_capabilities.append((r, destinations))
                return
        for version, first, _ in destinations.ranges():
            self.capability_singles.setdefault((version, first), []).append(r)


class DestinationIndex:
    """The global rules of every grant, indexed by destination address, so a node's filter skips unrelated
    rules.

    Most destinations are single node addresses; they go into a dict and, for
    the networks a router serves, a sorted list per family. Wider ones
    (prefixes, ``*``) and capability grants are few and are checked one by one.
    Entries are kept per grant: :meth:`set_grant` replaces one grant's rules.
    """

    def __init__(self, grants: Iterable[list[Rule]] = ()) -> None:
        self._grants: dict[int, _GrantEntries] = {}
        # The few grants with wide destinations, wide capability destinations or capability rules, which
        # every filter checks one by one.
        self._with_wide: dict[int, _GrantEntries] = {}
        self._with_wide_capabilities: dict[int, _GrantEntries] = {}
        self._with_capabilities: dict[int, _GrantEntries] = {}
        self._by_address: dict[AddressKey, dict[RuleKey, list[int]]] = {}
        self._small_wide_by_address: dict[AddressKey, dict[RuleKey, list[int]]] = {}
        self._capabilities_by_address: dict[AddressKey, set[RuleKey]] = {}
        self._sorted: dict[int, list[int]] | None = None
        for g, rules in enumerate(grants):
            self.set_grant(g, rules)

    def set_grant(self, g: int, rules: list[Rule]) -> None:
        """Index grant ``g``'s global rules in place of what it had."""
        old = self._grants.pop(g, None)
        self._with_wide.pop(g, None)
        self._with_wide_capabilities.pop(g, None)
        self._with_capabilities.pop(g, None)
        if old is not None:
            self._remove(g, old)
        entries = _GrantEntries(rules)
        self._grants[g] = entries
        if entries.wide:
            self._with_wide[g] = entries
        if entries.wide_capabilities:
            self._with_wide_capabilities[g] = entries
        if entries.capabilities:
            self._with_capabilities[g] = entries
        for key, hits in entries.singles.items():
            by_rule = self._by_address.get(key)
            if by_rule is None:
                by_rule = self._by_address[key] = {}
                self._sorted = None
            for r, j in hits:
                by_rule.setdefault((g, r), []).append(j)
        for key, hits in entries.small_wide.items():
            by_rule = self._small_wide_by_address.setdefault(key, {})
            for r, j in hits:
                by_rule.setdefault((g, r), []).append(j)
        for key, caps in entries.capability_singles.items():
            self._capabilities_by_address.setdefault(key, set()).update((g, r) for r in caps)

    def _remove(self, g: int, old: _GrantEntries) -> None:
        for key, hits in old.singles.items():
            by_rule = self._by_address[key]
            for r in {r for r, _ in hits}:
                del by_rule[(g, r)]
            if not by_rule:
                del self._by_address[key]
                self._sorted = None
        for key, hits in old.small_wide.items():
            by_rule = self._small_wide_by_address[key]
            for r in {r for r, _ in hits}:
                del by_rule[(g, r)]
            if not by_rule:
                del self._small_wide_by_address[key]
        for key, caps in old.capability_singles.items():
            found = self._capabilities_by_address[key]
            found.difference_update((g, r) for r in caps)
            if not found:
                del self._capabilities_by_address[key]

    def _singles_within(self, version: int, first: int, last: int) -> list[AddressKey]:
        if self._sorted is None:
            self._sorted = {v: sorted(a for version, a in self._by_address if version == v) for v in (4, 6)}
        addresses = self._sorted[version]
        start, stop = bisect.bisect_left(addresses, first), bisect.bisect_right(addresses, last)
        return [(version, value) for value in addresses[start:stop]]

    def _capabilities_for(self, node: PolicyNode) -> list[Rule]:
        """The capability rules that may reach ``node``: on its own addresses or its subnet routes only."""
        if node.subnet_routes:
            found = [(g, r) for g, entries in self._with_capabilities.items() for r in entries.capabilities]
        else:
            hits: set[RuleKey] = set()
            for key in node.ip_keys:
                hits.update(self._capabilities_by_address.get(key, ()))
            for g, entries in self._with_wide_capabilities.items():
                hits.update((g, r) for r, dsts in entries.wide_capabilities if node.has_ip_in(dsts))
            if not hits:
                return []
            found = list(hits)
        return [self._grants[g].rules[r] for g, r in sorted(found)]

    def reduce_for(self, node: PolicyNode) -> list[wire.FilterRule]:
        """``reduce_for_node`` of every grant's rules in grant order, capability rules last."""
        keys = list(node.ip_keys)
        for route in node.subnet_routes:
            keys += self._singles_within(
                route.version, int(route.network_address), int(route.broadcast_address)
            )
        if node.is_exit_node:
            for version, ranges in ((4, INTERNET.v4), (6, INTERNET.v6)):
                for first, last in ranges:
                    keys += self._singles_within(version, first, last)
        hits: dict[RuleKey, set[int]] = {}
        for key in keys:
            for rule_key, found in self._by_address.get(key, {}).items():
                hits.setdefault(rule_key, set()).update(found)
        if node.routes_nothing:
            # Only its own addresses reach it: small wide destinations are found under them.
            for key in node.ip_keys:
                for rule_key, found in self._small_wide_by_address.get(key, {}).items():
                    hits.setdefault(rule_key, set()).update(found)
        for g, entries in self._with_wide.items():
            for r, j in entries.large_wide if node.routes_nothing else entries.wide:
                if _dst_targets_node(entries.rules[r].dst_ports[j].addresses, node):
                    hits.setdefault((g, r), set()).add(j)
        reduced = []
        for (g, r), js in sorted(hits.items()):
            rule = self._grants[g].rules[r]
            reduced.append(rule.wire_with([rule.dst_ports[j] for j in sorted(js)], []))
        return reduced + reduce_for_node(self._capabilities_for(node), node)
