"""Which nodes one node's rules connect it to, found once per group of nodes that match the same rules.

Two nodes are peers when a rule lets either reach the other. A node's
:class:`Reach` is the destinations of the rules it may send on and the
sources of the rules that reach it; the nodes with an address in one of
those, and routers whose routes overlap one, are its peers. Which of the
tailnet-wide rules a node matches is all that its reach depends on, so
:class:`PeerClasses` keeps the peers found for each such set of matched
rules: nodes with the same view (the same tags or owner and the addresses
those resolve to) share them, and only a node's own rules (``autogroup:self``,
``via``) are looked at per node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyheadscale.policy.aliases import Tailnet
from pyheadscale.policy.netset import AddrSet, IPNetwork
from pyheadscale.policy.peers import Matcher, acts_as_source, is_reached
from pyheadscale.policy.types import PolicyNode

#: The indices of the matchers a node acts as a source of, and of those that reach it.
Signature = tuple[tuple[int, ...], tuple[int, ...]]


@dataclass(frozen=True)
class Reach:
    """Everything one node's rules connect it to, for finding its peers without pair-wise checks.

    ``parts`` holds the destinations of rules the node may send on and the
    sources of rules that reach it (kept apart: their union would be sorted
    and merged only to be looked up), ``internet`` whether it may send to the
    internet (so exit nodes are its peers).
    """

    parts: list[AddrSet]
    internet: bool


def signature_of(viewer: PolicyNode, matchers: Sequence[Matcher]) -> Signature:
    """Which of ``matchers`` ``viewer`` sends on and is reached by: all its :class:`Reach` depends on."""
    if viewer.routes_nothing:
        # Only its own addresses make it a source or a destination (no routes, not an exit node).
        keys = viewer.address_keys
        return (
            tuple(i for i, m in enumerate(matchers) if m.sources.contains_any(keys)),
            tuple(i for i, m in enumerate(matchers) if m.destinations.contains_any(keys)),
        )
    sending = tuple(i for i, m in enumerate(matchers) if acts_as_source(viewer, m))
    reached = tuple(i for i, m in enumerate(matchers) if is_reached(viewer, m))
    return sending, reached


def reach_from(signature: Signature, matchers: Sequence[Matcher]) -> Reach:
    sending, reached = signature
    parts = [matchers[i].destinations for i in sending] + [matchers[i].sources for i in reached]
    return Reach(parts, any(matchers[i].reaches_internet() for i in sending))


def reach_of(viewer: PolicyNode, matchers: Sequence[Matcher]) -> Reach:
    return reach_from(signature_of(viewer, matchers), matchers)


def connected(tailnet: Tailnet, reach: Reach) -> dict[int, PolicyNode]:
    """The nodes ``reach`` connects to: exactly those for which :func:`~pyheadscale.policy.peers.are_peers`
    holds with the matchers it was built from (the viewer itself among them, when they name it)."""
    unique = list({id(part): part for part in reach.parts}.values())
    ids = tailnet.ids_in_any(unique)
    routers = tailnet.routers()
    if routers:
        routed = tailnet.routed_addresses()
        near = [part for part in unique if part.overlaps(routed)]
        for router in routers:
            if router.id in ids:
                continue
            if any(part.overlaps_network(r) for part in near for r in router.subnet_routes) or (
                reach.internet and router.is_exit_node
            ):
                ids.add(router.id)
    return {i: tailnet.nodes[i] for i in ids}


#: After this many viewers, :class:`PeerClasses` indexes its matchers by address (a full map for every node,
#: as after a restart, asks for them all); a join asks for a few, for which checking each matcher is cheaper.
INDEX_AFTER_VIEWERS = 128


class PeerClasses:
    """The nodes the tailnet-wide matchers connect each signature to, in registration order, shared by
    every viewer with that signature. Valid for one tailnet state and one set of matchers: the engine
    makes a new one whenever either changes."""

    def __init__(self, tailnet: Tailnet, matchers: Sequence[Matcher]) -> None:
        self.tailnet = tailnet
        self.matchers = matchers
        self._found: dict[Signature, tuple[list[PolicyNode], set[int]]] = {}
        self._usable: dict[tuple[Signature, IPNetwork], bool] = {}
        self._viewers = 0
        self._index: dict[tuple[int, int], tuple[list[int], list[int]]] | None = None
        # Each viewer's signature once found (asked again for its routes): the node it was found for, and it.
        self._signatures: dict[int, tuple[PolicyNode, Signature]] = {}

    def shared(self, viewer: PolicyNode) -> tuple[list[PolicyNode], set[int]]:
        """The nodes the tailnet-wide matchers connect ``viewer`` to (itself included when they name it),
        in registration order and as ids; callers must not modify them."""
        signature = self.signature(viewer)
        shared = self._found.get(signature)
        if shared is None:
            found = connected(self.tailnet, reach_from(signature, self.matchers))
            nodes = sorted(found.values(), key=self.tailnet.registration_rank)
            shared = self._found[signature] = (nodes, set(found))
        return shared

    def route_usable(self, signature: Signature, route: IPNetwork) -> bool:
        """:func:`~pyheadscale.policy.peers.can_use_route` over the tailnet-wide matchers for a viewer
        that routes nothing and has ``signature``: the same for every such viewer, so answered once."""
        key = (signature, route)
        usable = self._usable.get(key)
        if usable is None:
            sending, reached = signature
            usable = self._usable[key] = any(
                self.matchers[i].destinations.overlaps_network(route) for i in sending
            ) or any(self.matchers[i].sources.overlaps_network(route) for i in reached)
        return usable

    def signature(self, viewer: PolicyNode) -> Signature:
        """:func:`signature_of`, from the address index for a node that routes nothing (only its own
        addresses make it a source or a destination)."""
        known = self._signatures.get(viewer.id)
        if known is not None and known[0] is viewer:
            return known[1]
        signature = self._find_signature(viewer)
        self._signatures[viewer.id] = (viewer, signature)
        return signature

    def _find_signature(self, viewer: PolicyNode) -> Signature:
        self._viewers += 1
        if self._index is None and self._viewers > INDEX_AFTER_VIEWERS:
            self._index = self._build_index()
        index = self._index
        if index is None or not viewer.routes_nothing or not all(k in index for k in viewer.ip_keys):
            return signature_of(viewer, self.matchers)
        sending: set[int] = set()
        reached: set[int] = set()
        for key in viewer.ip_keys:
            as_source, as_destination = index[key]
            sending.update(as_source)
            reached.update(as_destination)
        return tuple(sorted(sending)), tuple(sorted(reached))

    def _build_index(self) -> dict[tuple[int, int], tuple[list[int], list[int]]]:
        """Every tailnet address: the matchers it is a source of, and those it is a destination of."""
        index: dict[tuple[int, int], tuple[list[int], list[int]]] = {
            key: ([], []) for key in self.tailnet.address_keys()
        }
        for i, matcher in enumerate(self.matchers):
            for side, addresses in ((0, matcher.sources), (1, matcher.destinations)):
                for key in self.tailnet.address_keys_in(addresses):
                    entry = index.get(key)
                    if entry is not None:
                        entry[side].append(i)
        return index
