"""The policy engine: one policy, one tailnet, per-node answers, incremental updates.

Aliases are resolved once per policy and tailnet and cached; grants are
compiled from those resolutions. Per-node results (filter, SSH policy, peers,
capabilities) are computed on demand and cached. When a node joins, changes
or leaves, only the aliases that can name it are re-resolved, only grants
using those aliases are recompiled, and only the nodes those grants (old or
new) touch lose their cached results; :meth:`PolicyEngine.add_or_update_node`
returns those node ids so the server can push map deltas to them alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pyheadscale.policy.aliases import Alias, AliasKind, Autogroup, Resolver, Tailnet
from pyheadscale.policy.autoapprove import approved_routes
from pyheadscale.policy.filter import (
    ALLOW_ALL_RULES,
    CompiledGrant,
    Rule,
    allow_all_grant,
    compile_grant,
    policy_grants,
    self_rules,
    via_rules,
)
from pyheadscale.policy.model import Grant, Policy, parse_policy
from pyheadscale.policy.netset import AddrSet, IPNetwork
from pyheadscale.policy.nodeattrs import DISABLE_IPV4, cap_map_for
from pyheadscale.policy.peers import (
    Matcher,
    RouterHealth,
    are_peers,
    can_use_route,
    matchers_of,
    peer_view,
    primary_routers,
    routes_for_peer,
    via_matchers,
    via_steering,
)
from pyheadscale.policy.policytests import run_policy_tests, run_ssh_tests
from pyheadscale.policy.primaries import PrimaryRoutes
from pyheadscale.policy.reach import PeerClasses, connected, reach_of
from pyheadscale.policy.reduce import DestinationIndex, reduce_for_node
from pyheadscale.policy.ssh import SSHCompiler, localpart_domain
from pyheadscale.policy.types import PeerView, PolicyNode, PolicyUser
from pyheadscale.policy.validate import ambiguous_user_tokens, validate_policy
from pyheadscale.tailcfg.filter import FilterRule
from pyheadscale.tailcfg.ssh import SSHPolicy

DEFAULT_SERVER_URL = "https://unused"


#: Autogroups whose members change as nodes come and go.
_NODE_DEPENDENT_AUTOGROUPS = frozenset(
    g.value for g in (Autogroup.MEMBER, Autogroup.TAGGED, Autogroup.ADMIN, Autogroup.OWNER)
)


def _aliases_of(grant: Grant) -> list[Alias]:
    return [*grant.sources, *grant.destinations]


def _routes_of(node: PolicyNode | None) -> tuple[object, ...]:
    return (node.subnet_routes, node.exit_routes) if node is not None else ((), ())


def _destinations_of(compiled: CompiledGrant) -> list[AddrSet]:
    """Every address a compiled grant's global rules let traffic or capabilities reach (as parts: their
    union would be sorted and merged only to be looked up again)."""
    parts: list[AddrSet] = []
    for rule in compiled.rules:
        parts += [d.addresses for d in rule.dst_ports]
        parts += [c.destinations for c in rule.cap_grants]
    return parts


def _reach_of(compiled: CompiledGrant) -> list[AddrSet]:
    """Every address a compiled grant's rules mention, as sources or destinations (as parts)."""
    parts = [rule.sources for rule in compiled.rules] + _destinations_of(compiled)
    # autogroup:self parts only ever concern the changed node's owner; the caller adds those nodes.
    if compiled.via_part is not None:
        parts += [compiled.via_part.sources, *compiled.via_part.destinations]
    return parts


class PolicyEngine:
    """Compiles one policy for one tailnet.

    ``policy_text`` of ``None`` means no policy: every node may reach every
    node. Construction parses and validates the policy against ``users`` and
    ``nodes`` and raises :class:`PolicyError` when Tailscale would reject it.
    The policy's ``tests`` and ``sshTests`` need nodes to run against, so they
    are evaluated only when ``nodes`` is not empty; checks that need users
    (e-mail domains, ambiguous user names) only when ``users`` is not empty.
    """

    def __init__(
        self,
        policy_text: str | None,
        users: Iterable[PolicyUser] = (),
        nodes: Iterable[PolicyNode] = (),
        *,
        server_url: str = DEFAULT_SERVER_URL,
        owner_id: int | None = None,
        admin_ids: Iterable[int] | None = None,
        router_health: RouterHealth | None = None,
        primaries: dict[IPNetwork, int] | None = None,
    ) -> None:
        """``router_health`` limits primary routers to online, answering ones; ``primaries`` (the election in
        force under the engine this one replaces) keeps current primaries in place across a policy change."""
        self.router_health = router_health
        self._primaries = PrimaryRoutes(dict(primaries or {}))
        self.policy: Policy | None = parse_policy(policy_text) if policy_text is not None else None
        self.server_url = server_url
        self._owner_id = owner_id
        self._admin_ids = list(admin_ids) if admin_ids is not None else None
        self._grants: list[Grant] = []
        if self.policy is not None:
            self._grants = policy_grants(self.policy) if self.policy.has_filter_rules else [allow_all_grant()]
        self._has_via = any(g.via for g in self._grants)
        self._may_disable_ipv4 = self.policy is not None and any(
            DISABLE_IPV4 in entry.attrs for entry in self.policy.node_attrs
        )
        self._set_tailnet(list(users), list(nodes))
        if self.policy is not None:
            validate_policy(self.policy, self.tailnet)
            if self.tailnet.nodes:
                run_policy_tests(self.policy, self.resolver, self._global_rules())
                run_ssh_tests(self.policy, self.resolver, self.ssh_policy_for_node)

    # -- tailnet changes ---------------------------------------------------

    def _set_tailnet(self, users: list[PolicyUser], nodes: list[PolicyNode]) -> None:
        self.tailnet = Tailnet(users, nodes, owner_id=self._owner_id, admin_ids=self._admin_ids)
        policy = self.policy
        self.resolver = Resolver(
            policy.groups if policy else {}, policy.hosts if policy else {}, self.tailnet
        )
        self._compiled: list[CompiledGrant] = [compile_grant(g, self.resolver) for g in self._grants]
        self._primaries = self._elect()
        self._ssh = SSHCompiler(policy, self.resolver, self.server_url) if policy else None
        self._node_cache: dict[int, dict[str, Any]] = {}
        self._self_rules: dict[int, dict[int, list[Rule]]] = {}
        self._global_matcher_cache: list[Matcher] | None = None
        self._peer_classes: PeerClasses | None = None
        self._destination_index: DestinationIndex | None = None
        self._per_node_grants: list[tuple[int, CompiledGrant]] | None = None
        self._grant_matchers: dict[int, list[Matcher]] = {}

    def set_nodes(self, users: Iterable[PolicyUser], nodes: Iterable[PolicyNode]) -> None:
        """Replace the whole tailnet (a full recompile)."""
        self._set_tailnet(list(users), list(nodes))

    def ambiguous_user_tokens(self) -> list[str]:
        """User tokens of the policy that now match several users: each grants nothing until resolved."""
        return ambiguous_user_tokens(self.policy, self.tailnet) if self.policy is not None else []

    def add_or_update_node(self, node: PolicyNode) -> set[int]:
        """Add ``node`` or replace the node with its id; returns the ids of nodes whose results changed."""
        old = self.tailnet.nodes.get(node.id)
        if old == node:
            # Nothing the policy reads changed (a client's Hostinfo update, say): every result still holds.
            return set()
        old_peers = self.peer_ids(old.id) if old is not None else set()
        self.tailnet.add_node(node)
        return self._node_changed(old, node, old_peers)

    def remove_node(self, node_id: int) -> set[int]:
        """Remove a node; returns the ids of the remaining nodes whose results changed."""
        if node_id not in self.tailnet.nodes:
            return set()
        old_peers = self.peer_ids(node_id)
        old = self.tailnet.remove_node(node_id)
        self._node_cache.pop(node_id, None)
        return self._node_changed(old, None, old_peers)

    @property
    def primaries(self) -> dict[IPNetwork, int]:
        """Each subnet route's primary router (a copy)."""
        return dict(self._primaries.by_route)

    def _elect(self) -> PrimaryRoutes:
        return PrimaryRoutes(
            primary_routers(self.tailnet.nodes.values(), self._primaries.by_route, self.router_health)
        )

    def reelect_primaries(self) -> set[int]:
        """Elect primary routers again after routers came, went or changed health.

        Returns the routers that gained or lost a primary route; every cached peer map is dropped when there
        is one, since any viewer may see those routes.
        """
        elected = self._elect()
        if elected.by_route == self._primaries.by_route:
            return set()
        moved = self._primaries.moved(elected.by_route)
        self._primaries = elected
        for cache in self._node_cache.values():
            cache.pop("peers", None)
        return moved

    def _alias_names(self, alias: Alias, node: PolicyNode) -> bool:
        """Whether ``alias`` resolves to ``node``'s addresses because of what the node is (its tags, owner).

        Exactly the node-dependent part of :meth:`Resolver.resolve`: the resolution of any other alias does
        not change when this node joins, changes or leaves.
        """
        kind = alias.kind
        if kind is AliasKind.TAG:
            return alias.text in node.tags
        if alias.is_autogroup(Autogroup.MEMBER):
            return not node.is_tagged
        if alias.is_autogroup(Autogroup.TAGGED):
            return node.is_tagged
        if kind in (AliasKind.USER, AliasKind.USER_DOMAIN, AliasKind.GROUP) or (
            kind is AliasKind.AUTOGROUP and alias.text in _NODE_DEPENDENT_AUTOGROUPS
        ):
            owner = self.tailnet.node_user_id(node)
            user_ids = self.resolver.user_ids_of(alias)
            return owner is not None and user_ids is not None and owner in user_ids
        return False

    def _node_changed(self, old: PolicyNode | None, new: PolicyNode | None, old_peers: set[int]) -> set[int]:
        """Bring compiled state up to date after a node change; returns the affected node ids.

        Two sets are kept apart: the nodes whose results may have changed (returned; their peer maps and SSH
        policies are dropped), and within them the nodes whose packet filter may have changed. A filter
        holds the rules whose destination is the node, so a recompiled grant changes the filters of the
        nodes its old or new rules reach, not of those it lets send: a laptop joining a group that may reach
        a service changes the service's filter and the laptop's peers, not the filters of every group member.
        """
        self._peer_classes = None  # the tailnet changed: peers found per signature may differ
        changed = [n for n in (old, new) if n is not None]
        routes_changed = _routes_of(old) != _routes_of(new)
        if routes_changed:
            self._primaries = self._elect()
        stale = {a for a in self.resolver.cached_aliases() if any(self._alias_names(a, n) for n in changed)}
        if old is None and new is not None:
            # A join only adds the node's addresses to the aliases naming it.
            self.resolver.add_addresses(stale, new.addr_set)
        elif new is None and old is not None and not self.tailnet.has_any_address_of(old):
            # A leave takes them out, unless a remaining node shares one (then resolve again).
            self.resolver.remove_addresses(stale, old.addr_set)
        else:
            self.resolver.forget(stale)

        touched: list[AddrSet] = [n.addr_set for n in changed]
        reached: list[AddrSet] = []
        via_recompiled: set[str] = set()
        recompiled = False
        for index, grant in enumerate(self._grants):
            # ``*`` adds approved subnet routes to sources, and to what a capability is granted on.
            uses_routes = routes_changed and any(a.kind is AliasKind.WILDCARD for a in _aliases_of(grant))
            if uses_routes or any(a in stale for a in _aliases_of(grant)):
                recompiled = True
                before, after = self._compiled[index], compile_grant(grant, self.resolver)
                self._compiled[index] = after
                self._grant_matchers.pop(index, None)
                self._global_matcher_cache = self._peer_classes = None
                if self._destination_index is not None:
                    self._destination_index.set_grant(index, after.rules)
                self._per_node_grants = None
                touched += _reach_of(before) + _reach_of(after)
                reached += _destinations_of(before) + _destinations_of(after)
                if before.self_part is not None or after.self_part is not None:
                    self._self_rules.clear()
                if before.via_part is not None or after.via_part is not None:
                    # A via router's rules and peers follow the grant, whichever destination it serves.
                    via_recompiled.update(grant.via)
        for rule in self.policy.ssh if self.policy else []:
            if any(a in stale for a in rule.sources):
                touched.append(self.resolver.resolve_all(rule.destinations))
                if any(localpart_domain(u) is not None for u in rule.users):
                    # localpart rules also land on the source devices themselves.
                    touched.append(self.resolver.resolve_all(rule.sources))

        filter_stale = {n.id for n in changed} | self._nodes_reached(reached)
        filter_stale.update(n.id for tag in via_recompiled for n in self.tailnet.nodes_with_tag(tag))
        if recompiled:
            filter_stale.update(n.id for n in self.tailnet.routers() if n.is_exit_node)
        affected = self._nodes_reached(touched) | filter_stale
        affected.update(old_peers)
        owners = {self.tailnet.node_user_id(n) for n in changed} - {None}
        for owner in owners:
            self._self_rules.pop(owner, None)  # type: ignore[arg-type]
        if owners and self._has_self_rules():
            own_devices = {n.id for n in self.tailnet.nodes_of_users(owners)}  # type: ignore[arg-type]
            affected |= own_devices
            filter_stale |= own_devices
        via_tags = {t for g in self._grants for t in g.via}
        if routes_changed or any(t in via_tags for n in changed for t in n.tags):
            affected.update(self.tailnet.nodes)
            filter_stale.update(self.tailnet.nodes)
        routes_involved = routes_changed or (new is not None and bool(new.subnet_routes or new.exit_routes))
        simple = not routes_involved and not self.tailnet.routers() and not self._has_per_node_rules()
        # A join into such a tailnet only adds the node's own addresses to what aliases resolve to: the
        # affected nodes' filters (which may name it) are rebuilt, but their peer maps can only gain the node.
        plain_join = simple and old is None and new is not None
        self._forget(affected, filter_stale, keep_peers=plain_join)
        if self._ssh is not None:
            self._ssh.forget()
        if new is not None:
            self._node_cache.pop(new.id, None)
            new_peers = self.peer_ids(new.id)
            gained = new_peers - affected
            if plain_join:
                self._add_peer(new, new_peers)
            elif simple and not recompiled:
                self._add_peer(new, gained)
            else:
                self._forget(gained, filter_stale, keep_peers=False)
            affected |= new_peers | {new.id}
        return {i for i in affected if i in self.tailnet.nodes}

    def _nodes_reached(self, parts: Iterable[AddrSet]) -> set[int]:
        """Nodes with an address in one of ``parts`` and routers whose subnet routes overlap one."""
        unique = list({id(part): part for part in parts}.values())
        reached = self.tailnet.ids_in_any(unique)
        routers = self.tailnet.routers()
        if routers:
            routed = self.tailnet.routed_addresses()
            near = [part for part in unique if part.overlaps(routed)]
            for router in routers:
                if any(part.overlaps_network(r) for part in near for r in router.subnet_routes):
                    reached.add(router.id)
        return reached

    def _forget(self, node_ids: Iterable[int], filter_stale: set[int], *, keep_peers: bool) -> None:
        """Drop the cached results of ``node_ids``, keeping packet filters not in ``filter_stale`` (and with
        ``keep_peers`` the peer maps, which the caller then updates)."""
        node_cache = self._node_cache
        for node_id in node_ids:
            cache = node_cache.pop(node_id, None)
            if cache is None:
                continue
            kept: dict[str, Any] = {}
            if keep_peers and "peers" in cache:
                kept["peers"] = cache["peers"]
            if "filter" in cache and node_id not in filter_stale:
                kept["filter"] = cache["filter"]
            if kept:
                node_cache[node_id] = kept
        for node_id in filter_stale:
            self._node_cache.get(node_id, {}).pop("filter", None)

    def _add_peer(self, peer: PolicyNode, viewers: set[int]) -> None:
        """Add ``peer`` to the cached peer maps of ``viewers``, which gained it and nothing else.

        The caller guarantees that no route is involved and either no grant was recompiled (each viewer's
        rules and other peers are as before) or ``peer`` just joined (recompiled aliases only gained its
        addresses, so a viewer's reach only gained ``peer``). Recomputing every viewer's whole peer map
        instead costs O(tailnet) each, so O(tailnet²) per join, to find the same map plus ``peer``.
        """
        cache = self._node_cache
        # Walk the smaller side: in a registration storm most viewers have no cached peer map yet.
        candidates = [n for n in cache if n in viewers] if len(cache) < len(viewers) else viewers
        for node_id in candidates:
            cached = self._cached(node_id, "peers")
            if cached is not None:
                cached[peer.id] = self._viewer(self._node(node_id))(peer)

    # -- per-node results ----------------------------------------------------

    def _node(self, node_id: int) -> PolicyNode:
        try:
            return self.tailnet.nodes[node_id]
        except KeyError:
            raise KeyError(f"unknown node id {node_id}") from None

    def _cached(self, node_id: int, key: str) -> Any:
        return self._node_cache.get(node_id, {}).get(key)

    def _store(self, node_id: int, key: str, value: Any) -> Any:
        self._node_cache.setdefault(node_id, {})[key] = value
        return value

    def _global_rules(self) -> list[Rule]:
        return [rule for compiled in self._compiled for rule in compiled.rules]

    def _global_matchers(self) -> list[Matcher]:
        if self._global_matcher_cache is None:
            # Per grant, so a node change rebuilds the matchers of the grants it recompiled only.
            by_grant = self._grant_matchers
            for index, compiled in enumerate(self._compiled):
                if index not in by_grant:
                    by_grant[index] = matchers_of(compiled.rules)
            self._global_matcher_cache = [m for index in range(len(self._compiled)) for m in by_grant[index]]
        return self._global_matcher_cache

    def _own_rules(self, node: PolicyNode) -> list[Rule]:
        """The node's ``autogroup:self`` and ``via`` rules, in grant order.

        ``autogroup:self`` rules are the same for every device of one user, so they are made once per owner
        (and dropped when one of the owner's devices or a grant with a self part changes).
        """
        if self._per_node_grants is None:
            self._per_node_grants = [
                (index, c)
                for index, c in enumerate(self._compiled)
                if c.self_part is not None or c.via_part is not None
            ]
        per_node = self._per_node_grants
        if not per_node:
            return []
        owner = self.tailnet.node_user_id(node)
        shared: dict[int, list[Rule]] = {}
        if owner is not None and not node.is_tagged:
            cached = self._self_rules.get(owner)
            if cached is None:
                cached = self._self_rules[owner] = {
                    index: self_rules(c.self_part, node, self.resolver)
                    for index, c in per_node
                    if c.self_part is not None
                }
            shared = cached
        rules: list[Rule] = []
        for index, compiled in per_node:
            rules += shared.get(index, ())
            if compiled.via_part is not None:
                rules += via_rules(compiled.via_part, node)
        return rules

    def _own_matchers(self, node: PolicyNode) -> list[Matcher]:
        """Matchers of the node's per-node rules (``autogroup:self``, ``via``) only."""
        cached = self._cached(node.id, "own_matchers")
        if cached is None:
            own = self._own_rules(node)
            cached = self._store(
                node.id, "own_matchers", matchers_of(own) + via_matchers(self._compiled, node)
            )
        return list(cached)

    def _matchers(self, node: PolicyNode) -> list[Matcher]:
        """Matchers of every rule in the node's unreduced filter."""
        return self._global_matchers() + self._own_matchers(node)

    def filter_rules(self, node_id: int) -> list[FilterRule]:
        """The node's packet filter (``[]tailcfg.FilterRule``)."""
        node = self._node(node_id)
        if self.policy is None:
            return [rule.copy() for rule in ALLOW_ALL_RULES]
        cached = self._cached(node_id, "filter")
        if cached is None:
            if self._destination_index is None:
                self._destination_index = DestinationIndex(c.rules for c in self._compiled)
            own = self._own_rules(node)
            reduced = self._destination_index.reduce_for(node) + reduce_for_node(own, node)
            cached = self._store(node_id, "filter", reduced)
        return list(cached)

    def ssh_policy_for_node(self, node: PolicyNode) -> SSHPolicy | None:
        return self._ssh.policy_for(node) if self._ssh is not None else None

    def ssh_policy(self, node_id: int) -> SSHPolicy | None:
        """The node's ``tailcfg.SSHPolicy`` or ``None`` when the policy has no ``ssh`` section."""
        return self.ssh_policy_for_node(self._node(node_id))

    def cap_map(self, node_id: int) -> dict[str, Any]:
        """Capabilities the policy grants the node itself (``nodeAttrs``, ``randomizeClientPort``)."""
        if self.policy is None:
            return {}
        return cap_map_for(self.policy, self.resolver, self._node(node_id))

    def peers(self, node_id: int) -> dict[int, PeerView]:
        """The nodes ``node_id`` may see, with the addresses and routes it should use for each."""
        return dict(self._peer_map(node_id))

    def peer_ids(self, node_id: int) -> set[int]:
        """The ids of the nodes ``node_id`` may see: :meth:`peers` without building a view of each.

        Without a policy that is every other node; a join asks it for the joining node and the map server for
        every change, and building N views just to read their keys made each join O(tailnet) in views.
        """
        if self.policy is None:
            self._node(node_id)
            return {peer_id for peer_id in self.tailnet.nodes if peer_id != node_id}
        return set(self._peer_map(node_id))

    def peer_view(self, node_id: int, peer_id: int) -> PeerView | None:
        """What ``node_id`` sees of one peer, or None if it may not see it.

        One lookup in the cached peer map: the map server asks this per changed peer and recipient, where
        copying the recipient's whole peer map (:meth:`peers`) would make every delta O(tailnet).
        """
        if self.policy is None:
            viewer, peer = self._node(node_id), self.tailnet.nodes.get(peer_id)
            return self._viewer(viewer)(peer) if peer is not None and peer_id != node_id else None
        return self._peer_map(node_id).get(peer_id)

    def _peer_map(self, node_id: int) -> dict[int, PeerView]:
        """The cached peer map itself; callers must not change it.

        Without a policy every node sees every other, so the maps are not cached: one per node would hold
        O(tailnet²) entries, and building one costs no more than the full map that asks for it.
        """
        viewer = self._node(node_id)
        if self.policy is None:
            view = self._viewer(viewer)
            return {peer.id: view(peer) for peer in self._peers_of(viewer)}
        cached: dict[int, PeerView] | None = self._cached(node_id, "peers")
        if cached is None:
            view = self._viewer(viewer)
            cached = {peer.id: view(peer) for peer in self._peers_of(viewer)}
            self._store(node_id, "peers", cached)
        return cached

    def _route_usable(self, viewer: PolicyNode) -> Callable[[IPNetwork], bool]:
        """:func:`can_use_route` for ``viewer``; for a node that routes nothing, the tailnet-wide half is
        answered once per signature and route (:meth:`PeerClasses.route_usable`)."""
        if not viewer.routes_nothing:
            matchers = self._matchers(viewer)
            return lambda route: can_use_route(viewer, route, matchers)
        classes = self._classes()
        signature = classes.signature(viewer)
        own = self._own_matchers(viewer)
        return lambda route: classes.route_usable(signature, route) or can_use_route(viewer, route, own)

    def _v4_disabled(self, node_id: int) -> bool:
        """Whether ``nodeAttrs`` give the node ``disable-ipv4`` (never, when no entry names it)."""
        return self._may_disable_ipv4 and DISABLE_IPV4 in self.cap_map(node_id)

    def _viewer(self, viewer: PolicyNode) -> Callable[[PolicyNode], PeerView]:
        """What ``viewer`` sees of each of its peers. What is the same for every peer (whether the viewer
        has IPv4, which routes it may use) is found once per viewer, not once per peer with routes."""
        viewer_v4_disabled = self._v4_disabled(viewer.id)
        usable: Callable[[IPNetwork], bool] | None = None

        def view(peer: PolicyNode) -> PeerView:
            nonlocal usable
            peer_primaries = self._primaries.of(peer.id)
            if self.policy is None:
                routes = peer_primaries + list(peer.exit_routes)
            elif not peer_primaries and not peer.exit_routes and not self._has_via:
                # Most peers: no routes to offer and no via grant to steer any: nothing to check per viewer.
                routes = []
            else:
                if usable is None:
                    usable = self._route_usable(viewer)
                steering = via_steering(viewer, peer, self._grants, self.resolver)
                routes = routes_for_peer(viewer, peer, usable, peer_primaries, steering)
            # disable-ipv4 on either end means the pair talks over IPv6 only.
            ipv4_disabled = viewer_v4_disabled or self._v4_disabled(peer.id)
            return peer_view(peer, routes, ipv4_disabled=ipv4_disabled)

        return view

    def _peers_of(self, viewer: PolicyNode) -> list[PolicyNode]:
        """The viewer's peers, in registration order, found through the address index.

        The tailnet-wide rules the viewer matches give the peers it shares with
        every node matching the same (:class:`PeerClasses`); its own rules add
        theirs. Per-node rules living on the other node (``autogroup:self``,
        ``via``) are checked pair-wise for the few nodes that can have them.
        """
        tailnet = self.tailnet
        if self.policy is None:
            return [n for n in tailnet.nodes.values() if n.id != viewer.id]
        shared, shared_ids = self._classes().shared(viewer)
        own = self._own_matchers(viewer)
        found = connected(tailnet, reach_of(viewer, own)) if own else {}
        if self._has_per_node_rules():
            others: dict[int, PolicyNode] = {}
            owner = tailnet.node_user_id(viewer)
            if owner is not None:
                others.update((n.id, n) for n in tailnet.nodes_of_users([owner]))
            for tag in {t for g in self._grants for t in g.via}:
                others.update((n.id, n) for n in tailnet.nodes_with_tag(tag))
            for other in others.values():
                if other.id not in found and other.id not in shared_ids:
                    if are_peers(viewer, other, self._own_matchers(other)):
                        found[other.id] = other
        extra = [n for n in found.values() if n.id not in shared_ids and n.id != viewer.id]
        peers = [n for n in shared if n.id != viewer.id]
        # The shared part is in registration order already: sorting merges the few extra nodes into it.
        return sorted(peers + extra, key=tailnet.registration_rank) if extra else peers

    def _classes(self) -> PeerClasses:
        if self._peer_classes is None:
            self._peer_classes = PeerClasses(self.tailnet, self._global_matchers())
        return self._peer_classes

    def _has_self_rules(self) -> bool:
        """Whether any grant or SSH rule targets ``autogroup:self`` (results shared by a user's devices)."""
        ssh = self.policy.ssh if self.policy else []
        return any(c.self_part is not None for c in self._compiled) or any(
            d.is_autogroup(Autogroup.SELF) for rule in ssh for d in rule.destinations
        )

    def _has_per_node_rules(self) -> bool:
        return any(c.self_part is not None or c.via_part is not None for c in self._compiled)

    def auto_approved_routes(self, node: PolicyNode) -> list[str]:
        """The node's advertised routes that ``autoApprovers`` approve for it."""
        if self.policy is None:
            return []
        return approved_routes(self.policy, self.resolver, node)
