"""Peer visibility and the routes (AllowedIPs, PrimaryRoutes) a node sees on each peer.

Two nodes are peers when the policy lets either reach the other, where a
node also acts for the subnets it routes and an exit node for the internet.
A peer's routes are its primary subnet routes and approved exit routes that
the viewer may use, adjusted by ``via`` grants that steer a viewer's traffic
for a prefix to particular routers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pyheadscale.policy.aliases import Autogroup, Resolver
from pyheadscale.policy.filter import CompiledGrant, Rule, via_served
from pyheadscale.policy.model import Grant
from pyheadscale.policy.netset import ALL_V4, ALL_V6, INTERNET, AddrSet, IPNetwork
from pyheadscale.policy.types import PeerView, PolicyNode


@dataclass(frozen=True)
class Matcher:
    """The address-level shape of a rule: who may send, and to where."""

    sources: AddrSet
    destinations: AddrSet

    @classmethod
    def of(cls, rule: Rule) -> Matcher:
        return cls(rule.sources, rule.destinations())

    def reaches_internet(self) -> bool:
        dst = self.destinations
        return dst.covers_network(ALL_V4) or dst.covers_network(ALL_V6) or INTERNET.issubset(dst)


def matchers_of(rules: Iterable[Rule]) -> list[Matcher]:
    return [Matcher.of(rule) for rule in rules]


def via_matchers(grants: Iterable[CompiledGrant], node: PolicyNode) -> list[Matcher]:
    """Reachability through ``via`` routers, which app-only via grants give without any filter rule."""
    return [
        Matcher(g.via_part.sources, served)
        for g in grants
        if g.via_part is not None
        for served in via_served(g.via_part, node)
    ]


def acts_as_source(node: PolicyNode, matcher: Matcher) -> bool:
    return node.has_ip_in(matcher.sources) or any(
        matcher.sources.overlaps_network(r) for r in node.subnet_routes
    )


def is_reached(node: PolicyNode, matcher: Matcher) -> bool:
    dst = matcher.destinations
    if node.has_ip_in(dst) or any(dst.overlaps_network(r) for r in node.subnet_routes):
        return True
    return node.is_exit_node and matcher.reaches_internet()


def can_access(source: PolicyNode, destination: PolicyNode, matchers: Iterable[Matcher]) -> bool:
    return any(acts_as_source(source, m) and is_reached(destination, m) for m in matchers)


def are_peers(a: PolicyNode, b: PolicyNode, matchers: Sequence[Matcher]) -> bool:
    return can_access(a, b, matchers) or can_access(b, a, matchers)


def can_use_route(viewer: PolicyNode, route: IPNetwork, matchers: Iterable[Matcher]) -> bool:
    """Whether ``viewer`` needs ``route``: to send into it, or to answer (or route for) traffic from it."""
    own_routes = viewer.subnet_routes
    for m in matchers:
        if viewer.has_ip_in(m.sources) and m.destinations.overlaps_network(route):
            return True
        if m.sources.overlaps_network(route) and viewer.has_ip_in(m.destinations):
            return True
        if own_routes:
            if any(m.sources.overlaps_network(r) for r in own_routes) and m.destinations.overlaps_network(
                route
            ):
                return True
            if m.sources.overlaps_network(route) and any(
                m.destinations.overlaps_network(r) for r in own_routes
            ):
                return True
    return False


class RouterHealth(Protocol):
    """Which routers may carry a route now: online ones (candidates), and of those the ones answering."""

    def is_candidate(self, node_id: int) -> bool: ...

    def is_healthy(self, node_id: int) -> bool: ...


def primary_routers(
    nodes: Iterable[PolicyNode],
    previous: dict[IPNetwork, int] | None = None,
    health: RouterHealth | None = None,
) -> dict[IPNetwork, int]:
    """Each approved subnet route's primary router, among the candidates that serve it.

    The previous primary keeps the route while it is a healthy candidate, so a router coming back does not
    take its routes back (no flapping); otherwise the earliest registered healthy candidate wins. When every
    candidate is unhealthy the previous primary keeps it if still a candidate: pointing peers at another
    router the probes found unreachable would be no better. Without `health` every router is a healthy
    candidate (the policy alone, as `policy check` and the compatibility corpus evaluate it).
    """
    previous = previous or {}
    candidates: dict[IPNetwork, list[int]] = {}
    for node in nodes:
        if health is None or health.is_candidate(node.id):
            for route in node.subnet_routes:
                candidates.setdefault(route, []).append(node.id)
    primaries: dict[IPNetwork, int] = {}
    for route, ids in candidates.items():
        healthy = [i for i in ids if health is None or health.is_healthy(i)]
        current = previous.get(route)
        if current in healthy or (not healthy and current in ids):
            primaries[route] = current
        elif healthy:
            primaries[route] = healthy[0]
    return primaries


@dataclass
class ViaSteering:
    """How ``via`` grants change the routes one viewer sees on one peer."""

    include: list[IPNetwork] = field(default_factory=list)
    exclude: list[IPNetwork] = field(default_factory=list)
    use_primary: list[IPNetwork] = field(default_factory=list)


def _overlaps(a: AddrSet, route: IPNetwork) -> bool:
    return a.overlaps_network(route)


def via_steering(
    viewer: PolicyNode, peer: PolicyNode, grants: Sequence[Grant], resolver: Resolver
) -> ViaSteering:
    result = ViaSteering()
    if viewer.id == peer.id or not any(g.via for g in grants):
        return result
    applies = [any(viewer.has_ip_in(resolver.resolve(s)) for s in g.sources) for g in grants]
    dsts = [
        [resolver.resolve(d) for d in g.destinations if not d.is_autogroup(Autogroup.INTERNET)]
        for g in grants
    ]
    for grant, viewer_matches, destinations in zip(grants, applies, dsts, strict=True):
        if not grant.via or not viewer_matches:
            continue
        matched = [r for r in peer.subnet_routes if any(_overlaps(d, r) for d in destinations)]
        if peer.is_exit_node and any(d.is_autogroup(Autogroup.INTERNET) for d in grant.destinations):
            matched.extend(peer.exit_routes)
        if matched:
            target = result.include if any(t in peer.tags for t in grant.via) else result.exclude
            target.extend(matched)
    if not result.include and not result.exclude:
        return result
    nodes = list(resolver.tailnet.nodes.values())
    for grant, viewer_matches, destinations in zip(grants, applies, dsts, strict=True):
        if not grant.via or not viewer_matches:
            continue
        for included in list(result.include):
            if not any(_overlaps(d, included) for d in destinations):
                continue
            # Among several routers with the via tag, only the earliest registered one carries the route.
            candidates = [
                n.id for n in nodes if any(t in n.tags for t in grant.via) and included in n.subnet_routes
            ]
            if candidates and peer.id != candidates[0]:
                result.include = [p for p in result.include if p != included]
                if included not in result.exclude:
                    result.exclude.append(included)
    for grant, viewer_matches, destinations in zip(grants, applies, dsts, strict=True):
        if grant.via or not viewer_matches:
            continue
        for destination in destinations:
            for route in result.include:
                if _overlaps(destination, route) and route not in result.use_primary:
                    result.use_primary.append(route)
            result.exclude = [p for p in result.exclude if not _overlaps(destination, p)]
    return result


def routes_for_peer(
    viewer: PolicyNode,
    peer: PolicyNode,
    usable: Callable[[IPNetwork], bool],
    peer_primaries: Sequence[IPNetwork],
    steering: ViaSteering,
) -> list[IPNetwork]:
    """``peer_primaries`` are the subnet routes ``peer`` is primary for, in election order; ``usable`` is
    :func:`can_use_route` for the viewer and its matchers."""
    candidates = [r for r in [*peer_primaries, *peer.exit_routes] if r not in steering.exclude]
    routes = [r for r in candidates if usable(r)]
    for route in steering.include:
        if route in routes:
            continue
        if route in peer_primaries or route not in steering.use_primary:
            routes.append(route)
    for route in peer_primaries:
        if route in viewer.subnet_routes and route not in routes:
            routes.append(route)
    return routes


def peer_view(peer: PolicyNode, routes: Sequence[IPNetwork], ipv4_disabled: bool = False) -> PeerView:
    """The peer's AllowedIPs and PrimaryRoutes; with ``ipv4_disabled`` its IPv4 address is left out."""
    if not routes and not ipv4_disabled:
        return peer.plain_view
    exit_like = (ALL_V4, ALL_V6)
    texts = zip(peer.ips, peer.prefix_texts, strict=True)
    addresses = [text for p, text in texts if not (ipv4_disabled and p.version == 4)]
    return PeerView(
        allowed_ips=addresses + [str(r) for r in routes],
        primary_routes=[str(r) for r in routes if r not in exit_like],
    )
