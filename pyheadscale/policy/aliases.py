"""Aliases (the names used in ``src``, ``dst``, ``target``...) and their resolution to addresses.

An alias is parsed once from policy text into an :class:`Alias`; a
:class:`Tailnet` (users and nodes) turns it into the set of addresses it
stands for. Address aliases (IPs, CIDRs, hosts) stand for exactly their
prefix; identity aliases (users, groups, tags, autogroups) stand for the
addresses of the nodes they match.
"""

from __future__ import annotations

import bisect
import enum
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pyheadscale.policy.netset import (
    EMPTY,
    EVERYTHING,
    INTERNET,
    TAILNET_ADDRESSES,
    AddrSet,
    IPNetwork,
    first_addresses,
    wide_ranges,
)
from pyheadscale.policy.types import PolicyNode, PolicyUser


class AliasKind(enum.Enum):
    WILDCARD = "wildcard"
    PREFIX = "prefix"
    USER = "user"
    USER_DOMAIN = "user-domain"
    GROUP = "group"
    TAG = "tag"
    AUTOGROUP = "autogroup"
    HOST = "host"


class Autogroup(enum.StrEnum):
    INTERNET = "autogroup:internet"
    MEMBER = "autogroup:member"
    TAGGED = "autogroup:tagged"
    SELF = "autogroup:self"
    NONROOT = "autogroup:nonroot"
    DANGER_ALL = "autogroup:danger-all"
    ADMIN = "autogroup:admin"
    OWNER = "autogroup:owner"


KNOWN_AUTOGROUPS = frozenset(a.value for a in Autogroup)


class AliasSyntaxError(ValueError):
    """The text is not any kind of alias."""


@dataclass(frozen=True)
class Alias:
    """One parsed alias. ``network`` is set for :attr:`AliasKind.PREFIX` only."""

    kind: AliasKind
    text: str
    network: IPNetwork | None = None

    def __str__(self) -> str:
        return self.text

    def is_autogroup(self, group: Autogroup) -> bool:
        return self.kind is AliasKind.AUTOGROUP and self.text == group.value


def parse_ip_or_prefix(text: str) -> IPNetwork | None:
    """Parse an IP address or CIDR the way Go's netip does (no zone, host bits allowed)."""
    if "%" in text or not text or text != text.strip():
        return None
    try:
        if "/" in text:
            address, _, bits = text.partition("/")
            if not bits.isdigit() or (len(bits) > 1 and bits[0] == "0"):
                return None
            ipaddress.ip_address(address)
            return ipaddress.ip_network(text, strict=False)
        return ipaddress.ip_network(ipaddress.ip_address(text))
    except ValueError:
        return None


def parse_alias(text: str) -> Alias:
    """Classify alias text; raises :class:`AliasSyntaxError` when it is none of them."""
    network = parse_ip_or_prefix(text)
    if network is not None:
        return Alias(AliasKind.PREFIX, text, network)
    if text == "*":
        return Alias(AliasKind.WILDCARD, text)
    if text.startswith("user:") and "@" in text:
        local = text[len("user:") :].rpartition("@")[0]
        if local == "*":
            return Alias(AliasKind.USER_DOMAIN, text)
        return Alias(AliasKind.USER, text[len("user:") :])
    if "@" in text:
        return Alias(AliasKind.USER, text)
    if text.startswith("group:"):
        return Alias(AliasKind.GROUP, text)
    if text.startswith("tag:"):
        return Alias(AliasKind.TAG, text)
    if text.startswith("autogroup:"):
        if text not in KNOWN_AUTOGROUPS:
            raise AliasSyntaxError(f"unknown autogroup {text!r}")
        return Alias(AliasKind.AUTOGROUP, text)
    if ":" not in text and text:
        return Alias(AliasKind.HOST, text)
    raise AliasSyntaxError(f"{text!r}: invalid address")


def is_email_token(token: str) -> bool:
    """Whether a user token is email-shaped (``local@domain``) rather than a name (``name@``)."""
    local, at, domain = token.rpartition("@")
    return bool(at and local and domain)


def user_domain_of(alias: Alias) -> str:
    """The domain of a ``user:*@domain`` alias."""
    return alias.text.rpartition("@")[2]


class Tailnet:
    """Users and nodes, indexed for alias resolution and address lookups.

    ``owner_id`` and ``admin_ids`` back ``autogroup:owner`` and
    ``autogroup:admin``; the engine's inputs do not carry roles, so callers
    decide (the compatibility corpus treats every user as admin and the
    first user as owner). ``nodes`` keeps registration order; change it only
    through :meth:`add_node` and :meth:`remove_node` so the indexes follow.
    """

    def __init__(
        self,
        users: Iterable[PolicyUser],
        nodes: Iterable[PolicyNode],
        *,
        owner_id: int | None = None,
        admin_ids: Iterable[int] | None = None,
    ) -> None:
        self.users = list(users)
        self.owner_id = owner_id if owner_id is not None else (self.users[0].id if self.users else None)
        self.admin_ids = (
            frozenset(admin_ids) if admin_ids is not None else frozenset(u.id for u in self.users)
        )
        self._user_ids_by_name = {u.name: u.id for u in self.users}
        # User tokens resolve through these (every rule names users: a scan per token was O(tokens x users)).
        self._by_email = _index(self.users, lambda u: [u.email] if u.email else [])
        self._by_name = _index(self.users, lambda u: [u.name])
        self._by_operator_name = _index(self.users, lambda u: [] if u.name_from_provider else [u.name])
        self._by_provider_id = _index(self.users, lambda u: [u.provider_id] if u.provider_id else [])
        self.nodes: dict[int, PolicyNode] = {}
        self._by_user: dict[int, dict[int, PolicyNode]] = {}
        self._by_tag: dict[str, dict[int, PolicyNode]] = {}
        # Per IP family: each node address's node, and the addresses in order.
        self._node_at: dict[int, dict[int, int]] = {4: {}, 6: {}}
        self._sorted_addresses: dict[int, list[int]] = {4: [], 6: []}
        self._registered: dict[int, int] = {}
        self._subnet_routes: list[IPNetwork] | None = None
        self._routed: AddrSet | None = None
        self._routers: dict[int, PolicyNode] = {}
        for node in nodes:
            self._add_node(node, keep_sorted=False)
        for addresses in self._sorted_addresses.values():
            addresses.sort()

    def add_node(self, node: PolicyNode) -> PolicyNode | None:
        """Add a node, or replace the one with its id in place (keeping its registration order)."""
        return self._add_node(node, keep_sorted=True)

    def _add_node(self, node: PolicyNode, *, keep_sorted: bool) -> PolicyNode | None:
        old = self.nodes.get(node.id)
        if old is not None:
            self._unindex(old)
        self._registered.setdefault(node.id, len(self._registered))
        self.nodes[node.id] = node
        self._index(node, keep_sorted=keep_sorted)
        return old

    def remove_node(self, node_id: int) -> PolicyNode | None:
        node = self.nodes.pop(node_id, None)
        if node is not None:
            self._unindex(node)
        return node

    def _index(self, node: PolicyNode, *, keep_sorted: bool) -> None:
        """Index ``node``; without ``keep_sorted`` its addresses are appended (the caller sorts them once)."""
        if node.subnet_routes:
            # The tailnet's subnet routes change only with a node that has some (a join of one that has
            # none would otherwise walk every node to list them again).
            self._subnet_routes = self._routed = None
        if node.subnet_routes or node.exit_routes:
            self._routers[node.id] = node
        owner = self.node_user_id(node)
        if owner is not None:
            self._by_user.setdefault(owner, {})[node.id] = node
        for tag in node.tags:
            self._by_tag.setdefault(tag, {})[node.id] = node
        for version, value in node.address_keys:
            self._node_at[version][value] = node.id
            if keep_sorted:
                bisect.insort(self._sorted_addresses[version], value)
            else:
                self._sorted_addresses[version].append(value)

    def _unindex(self, node: PolicyNode) -> None:
        if node.subnet_routes:
            self._subnet_routes = self._routed = None
        self._routers.pop(node.id, None)
        owner = self.node_user_id(node)
        if owner is not None:
            self._by_user.get(owner, {}).pop(node.id, None)
        for tag in node.tags:
            self._by_tag.get(tag, {}).pop(node.id, None)
        for version, value in node.address_keys:
            node_at = self._node_at[version]
            if node_at.get(value) == node.id:
                del node_at[value]
                addresses = self._sorted_addresses[version]
                index = bisect.bisect_left(addresses, value)
                if index < len(addresses) and addresses[index] == value:
                    del addresses[index]

    def find_users(self, token: str) -> list[PolicyUser]:
        """Every user a user token could mean.

        An email-shaped token (``alice@example.com``) means the user with that email (the server passes only
        emails an operator set or the identity provider verified), that provider identity, or that name when
        an operator chose it; a name an identity provider chose (``preferred_username``) never counts, or
        anyone could claim to be ``alice@example.com`` there. A name token (``alice@``) means that name or
        that provider identity.
        """
        trimmed = token.removesuffix("@")
        indexes: list[dict[str, list[PolicyUser]]] = (
            [self._by_email, self._by_provider_id, self._by_operator_name]
            if is_email_token(token)
            else [self._by_name, self._by_provider_id]
        )
        found = {u.id: u for index in indexes for u in index.get(trimmed, ())}
        return list(found.values())

    def user_ids_for(self, token: str) -> set[int]:
        """The one user a token names; none when it matches several, so an ambiguous token grants nothing."""
        found = self.find_users(token)
        return {found[0].id} if len(found) == 1 else set()

    def user_ids_in_domain(self, domain: str) -> set[int]:
        return {u.id for u in self.users if u.email.rpartition("@")[2].lower() == domain.lower()}

    def node_user_id(self, node: PolicyNode) -> int | None:
        """The owning user's id, resolving by name when the caller gave none."""
        if node.is_tagged:
            return None
        if node.user_id is not None:
            return node.user_id
        return self._user_ids_by_name.get(node.user) if node.user is not None else None

    def nodes_of_users(self, user_ids: Iterable[int]) -> list[PolicyNode]:
        """User-owned (untagged) nodes of these users, in registration order."""
        found = [n for uid in user_ids for n in self._by_user.get(uid, {}).values()]
        return sorted(found, key=self.registration_rank) if len(found) > 1 else found

    def routers(self) -> list[PolicyNode]:
        """Nodes with approved subnet or exit routes."""
        return list(self._routers.values())

    def nodes_with_tag(self, tag: str) -> list[PolicyNode]:
        return list(self._by_tag.get(tag, {}).values())

    def ids_in(self, addresses: AddrSet) -> set[int]:
        """Ids of the nodes with an address in ``addresses``, found by range lookups rather than a scan."""
        return self.ids_in_any([addresses])

    def ids_in_any(self, parts: Iterable[AddrSet]) -> set[int]:
        """Ids of the nodes with an address in one of ``parts`` (:meth:`ids_in` of their union, unmerged)."""
        parts = list(parts)
        found: set[int | None] = set()
        for version in (4, 6):
            node_at = self._node_at[version]
            # Most ranges are one node address: the node at each range's first address, one lookup each
            # (and no call per range or part), then a search of the node addresses within each wider range.
            found.update(map(node_at.get, first_addresses(parts, version)))
            sorted_addresses = self._sorted_addresses[version]
            for first, last in wide_ranges(parts, version):
                start = bisect.bisect_left(sorted_addresses, first)
                stop = bisect.bisect_right(sorted_addresses, last)
                found.update(map(node_at.get, sorted_addresses[start:stop]))
        found.discard(None)
        return found  # type: ignore[return-value]  # None is out

    def has_any_address_of(self, node: PolicyNode) -> bool:
        """Whether a node in the tailnet may have one of ``node``'s addresses (if unsure, yes)."""
        for version, value in node.address_keys:
            addresses = self._sorted_addresses[version]
            index = bisect.bisect_left(addresses, value)
            if index < len(addresses) and addresses[index] == value:
                return True
        return False

    def address_keys(self) -> list[tuple[int, int]]:
        """Every node address, as ``(version, integer)``."""
        return [(version, value) for version, node_at in self._node_at.items() for value in node_at]

    def address_keys_in(self, addresses: AddrSet) -> list[tuple[int, int]]:
        """The node addresses in ``addresses``, as ``(version, integer)``."""
        keys: list[tuple[int, int]] = []
        for version, ranges in ((4, addresses.v4), (6, addresses.v6)):
            node_at = self._node_at[version]
            sorted_addresses = self._sorted_addresses[version]
            for first, last in ranges:
                if first == last:
                    if first in node_at:
                        keys.append((version, first))
                    continue
                start = bisect.bisect_left(sorted_addresses, first)
                stop = bisect.bisect_right(sorted_addresses, last)
                keys.extend((version, value) for value in sorted_addresses[start:stop])
        return keys

    def nodes_in(self, addresses: AddrSet) -> list[PolicyNode]:
        """Nodes with an address in ``addresses``, in registration order."""
        return sorted((self.nodes[i] for i in self.ids_in(addresses)), key=self.registration_rank)

    def registration_rank(self, node: PolicyNode) -> int:
        return self._registered[node.id]

    def routed_addresses(self) -> AddrSet:
        """Every address some node's approved subnet routes cover."""
        if self._routed is None:
            self._routed = AddrSet.of(self.approved_subnet_routes())
        return self._routed

    def approved_subnet_routes(self) -> list[IPNetwork]:
        """Every approved non-exit route in the tailnet, without duplicates, in node order."""
        if self._subnet_routes is None:
            seen: dict[IPNetwork, None] = {}
            for node in self.nodes.values():
                for route in node.subnet_routes:
                    seen.setdefault(route, None)
            self._subnet_routes = list(seen)
        return list(self._subnet_routes)


def _index(users: list[PolicyUser], keys: Callable[[PolicyUser], list[str]]) -> dict[str, list[PolicyUser]]:
    index: dict[str, list[PolicyUser]] = {}
    for user in users:
        for key in keys(user):
            index.setdefault(key, []).append(user)
    return index


def _addresses_of(nodes: Iterable[PolicyNode]) -> AddrSet:
    return AddrSet.union_of(n.addr_set for n in nodes)


class Resolver:
    """Resolves aliases of one policy against one tailnet, caching per alias and per list of aliases."""

    def __init__(self, groups: dict[str, list[str]], hosts: dict[str, IPNetwork], tailnet: Tailnet) -> None:
        self.groups = groups
        self.hosts = hosts
        self.tailnet = tailnet
        self._cache: dict[Alias, AddrSet] = {}
        # Unions of several aliases (a rule's sources, mostly): each is sorted and merged from hundreds of
        # node addresses, and a join recompiles every grant naming the node. Every alias of a cached union
        # has its resolution cached too.
        self._unions: dict[tuple[Alias, ...], AddrSet] = {}
        # The users each identity alias names: users and groups do not change for a resolver's lifetime, and
        # every node change asks this of every cached alias.
        self._user_ids: dict[Alias, frozenset[int] | None] = {}

    def resolve(self, alias: Alias) -> AddrSet:
        """Addresses ``alias`` stands for; ``autogroup:self`` resolves empty (it is per node)."""
        cached = self._cache.get(alias)
        if cached is None:
            cached = self._cache[alias] = self._resolve(alias)
        return cached

    def cached_aliases(self) -> list[Alias]:
        return list(self._cache)

    def _unions_naming(self, aliases: set[Alias]) -> list[tuple[Alias, ...]]:
        return [key for key in self._unions if not aliases.isdisjoint(key)]

    def forget(self, aliases: Iterable[Alias]) -> None:
        """Drop cached resolutions, e.g. after a node they may name changed."""
        aliases = set(aliases)
        for alias in aliases:
            self._cache.pop(alias, None)
        for key in self._unions_naming(aliases):
            del self._unions[key]

    def remove_addresses(self, aliases: Iterable[Alias], addresses: AddrSet) -> None:
        """Take a leaving node's addresses out of the cached resolutions of the aliases that named it; only
        right when no remaining node has one of them (:meth:`Tailnet.has_any_address_of`)."""
        aliases = set(aliases)
        for alias in aliases:
            cached = self._cache.get(alias)
            if cached is not None:
                self._cache[alias] = cached - addresses
        for key in self._unions_naming(aliases):
            # Another alias of the union (a prefix, ``*``) may still hold the addresses: then merge again.
            if any(self._cache[a].overlaps(addresses) for a in key if a not in aliases):
                del self._unions[key]
            else:
                self._unions[key] = self._unions[key] - addresses

    def add_addresses(self, aliases: Iterable[Alias], addresses: AddrSet) -> None:
        """Add a joining node's addresses to the cached resolutions of the aliases that name it."""
        aliases = set(aliases)
        for alias in aliases:
            cached = self._cache.get(alias)
            if cached is not None:
                self._cache[alias] = cached | addresses
        for key in self._unions_naming(aliases):
            self._unions[key] = self._unions[key] | addresses

    def resolve_all(self, aliases: Iterable[Alias]) -> AddrSet:
        """The union of what ``aliases`` stand for."""
        key = tuple(aliases)
        if len(key) == 1:
            return self.resolve(key[0])
        union = self._unions.get(key)
        if union is None:
            union = self._unions[key] = AddrSet.union_of([self.resolve(a) for a in key])
        return union

    def group_user_ids(self, group: str) -> set[int]:
        ids: set[int] = set()
        for member in self.groups.get(group, []):
            ids |= self.tailnet.user_ids_for(member)
        return ids

    def user_ids_of(self, alias: Alias) -> frozenset[int] | None:
        """User ids an identity alias names, or ``None`` for aliases that are not about users."""
        if alias in self._user_ids:
            return self._user_ids[alias]
        found = self._find_user_ids(alias)
        user_ids = self._user_ids[alias] = frozenset(found) if found is not None else None
        return user_ids

    def _find_user_ids(self, alias: Alias) -> set[int] | None:
        tailnet = self.tailnet
        if alias.kind is AliasKind.USER:
            return tailnet.user_ids_for(alias.text)
        if alias.kind is AliasKind.USER_DOMAIN:
            return tailnet.user_ids_in_domain(user_domain_of(alias))
        if alias.kind is AliasKind.GROUP:
            return self.group_user_ids(alias.text)
        if alias.is_autogroup(Autogroup.ADMIN):
            return set(tailnet.admin_ids)
        if alias.is_autogroup(Autogroup.OWNER):
            return {tailnet.owner_id} if tailnet.owner_id is not None else set()
        return None

    def _resolve(self, alias: Alias) -> AddrSet:
        tailnet = self.tailnet
        kind = alias.kind
        if kind is AliasKind.WILDCARD:
            return TAILNET_ADDRESSES
        if kind is AliasKind.PREFIX:
            assert alias.network is not None
            return AddrSet.of([alias.network])
        if kind is AliasKind.HOST:
            network = self.hosts.get(alias.text)
            return AddrSet.of([network]) if network is not None else EMPTY
        if kind is AliasKind.TAG:
            return _addresses_of(tailnet.nodes_with_tag(alias.text))
        user_ids = self.user_ids_of(alias)
        if user_ids is not None:
            return _addresses_of(tailnet.nodes_of_users(user_ids))
        if alias.is_autogroup(Autogroup.MEMBER):
            return _addresses_of(n for n in tailnet.nodes.values() if not n.is_tagged)
        if alias.is_autogroup(Autogroup.TAGGED):
            return _addresses_of(n for n in tailnet.nodes.values() if n.is_tagged)
        if alias.is_autogroup(Autogroup.INTERNET):
            return INTERNET
        if alias.is_autogroup(Autogroup.DANGER_ALL):
            return EVERYTHING
        return EMPTY
