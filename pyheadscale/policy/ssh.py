"""Tailscale SSH: compiling ``ssh`` rules into one node's ``tailcfg.SSHPolicy``.

A destination node gets a rule for every ``ssh`` entry whose ``dst`` covers
it. Principals are the source nodes' addresses. ``localpart:*@domain`` users
map each source user to the local part of their e-mail, which needs one rule
per source user. Rules with the ``check`` action come first, as Tailscale
orders them.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from pyheadscale.policy.aliases import Autogroup, Resolver
from pyheadscale.policy.model import Policy, SSHRule
from pyheadscale.policy.netset import AddrSet
from pyheadscale.policy.types import PolicyNode
from pyheadscale.tailcfg import ssh as wire

#: Where clients are sent to re-authenticate for ``check`` rules.
CHECK_PATH = "/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID?local_user=$LOCAL_USER"

_ACCEPT_ACTION: wire.SSHAction = {
    "accept": True,
    "allowAgentForwarding": True,
    "allowLocalPortForwarding": True,
    "allowRemotePortForwarding": True,
}


def localpart_domain(user: str) -> str | None:
    """The domain of a well-formed ``localpart:*@domain`` entry, else ``None``."""
    if not user.startswith("localpart:"):
        return None
    local, at, domain = user[len("localpart:") :].rpartition("@")
    return domain if at and local == "*" and domain else None


def _ssh_users(users: list[str]) -> dict[str, str]:
    """The ``sshUsers`` map: root only when named, ``*`` -> ``=`` for ``autogroup:nonroot``."""
    mapping: dict[str, str] = {}
    if Autogroup.NONROOT.value in users:
        mapping["*"] = "="
    mapping["root"] = "root" if "root" in users else ""
    for user in users:
        if user not in ("root", Autogroup.NONROOT.value) and localpart_domain(user) is None:
            mapping[user] = user
    return mapping


@dataclass
class _SSHSources:
    addresses: AddrSet
    by_user: dict[int, list[wire.SSHPrincipal]]
    tagged: list[wire.SSHPrincipal]


def _principals(addresses: AddrSet) -> list[wire.SSHPrincipal]:
    """One principal per address of the source nodes.

    tailscaled parses a principal's nodeIP as one address and compares it with the connection's source, so
    the merged ranges an AddrSet renders (``100.64.0.1-100.64.0.2`` for two neighbours) would match nobody.
    """
    out: list[wire.SSHPrincipal] = []
    for address_type, ranges in ((IPv4Address, addresses.v4), (IPv6Address, addresses.v6)):
        for first, last in ranges:
            out.extend({"nodeIP": str(address_type(i))} for i in range(first, last + 1))
    return out


class SSHCompiler:
    """Compiles SSH policies for nodes of one tailnet; ``server_url`` prefixes check URLs."""

    def __init__(self, policy: Policy, resolver: Resolver, server_url: str) -> None:
        self.policy = policy
        self.resolver = resolver
        self.check_action: wire.SSHAction = {"holdAndDelegate": server_url.rstrip("/") + CHECK_PATH}
        self._sources_by_rule: dict[int, _SSHSources] = {}

    def policy_for(self, node: PolicyNode) -> wire.SSHPolicy | None:
        if not self.policy.ssh:
            return None
        rules: list[wire.SSHRule] = []
        for index, rule in enumerate(self.policy.ssh):
            rules.extend(self._rules_for(index, rule, node))
        checks = [r for r in rules if "holdAndDelegate" in r["action"]]
        return {"rules": checks + [r for r in rules if "holdAndDelegate" not in r["action"]]}

    def _localparts(self, rule: SSHRule) -> dict[int, str]:
        """Source user id -> login name, for users whose e-mail domain a localpart entry names."""
        by_user: dict[int, str] = {}
        for entry in rule.users:
            domain = localpart_domain(entry)
            if domain is None:
                continue
            for user in self.resolver.tailnet.users:
                local, at, user_domain = user.email.rpartition("@")
                if at and user_domain.lower() == domain.lower():
                    by_user[user.id] = local
        return by_user

    def forget(self) -> None:
        """Drop per-rule caches after the tailnet changed."""
        self._sources_by_rule.clear()

    def _sources_of(self, index: int, rule: SSHRule) -> _SSHSources:
        """A rule's source nodes grouped by owner; the same for every destination, so cached."""
        cached = self._sources_by_rule.get(index)
        if cached is not None:
            return cached
        tailnet = self.resolver.tailnet
        addresses = self.resolver.resolve_all(rule.sources)
        by_user: dict[int, AddrSet] = {}
        tagged: list[wire.SSHPrincipal] = []
        for source in tailnet.nodes_in(addresses):
            if source.is_tagged:
                # One principal per tag and address, as Tailscale lists them.
                tagged.extend({"nodeIP": str(ip)} for _ in source.tags for ip in source.ips)
                continue
            owner = tailnet.node_user_id(source)
            if owner is not None:
                by_user[owner] = by_user.get(owner, AddrSet()) | source.addr_set
        grouped = _SSHSources(
            addresses=addresses,
            by_user={uid: _principals(addrs) for uid, addrs in sorted(by_user.items())},
            tagged=tagged,
        )
        self._sources_by_rule[index] = grouped
        return grouped

    def _rules_for(self, index: int, rule: SSHRule, node: PolicyNode) -> list[wire.SSHRule]:
        resolver = self.resolver
        to_self = any(d.is_autogroup(Autogroup.SELF) for d in rule.destinations)
        others = [d for d in rule.destinations if not d.is_autogroup(Autogroup.SELF)]
        has_localpart = any(localpart_domain(u) is not None for u in rule.users)
        is_destination = bool(others) and node.has_ip_in(resolver.resolve_all(others))
        if not (to_self or is_destination or has_localpart):
            return []
        sources = self._sources_of(index, rule)
        if not sources.addresses:
            return []
        action = _ACCEPT_ACTION.copy() if rule.action == "accept" else self.check_action.copy()
        users = _ssh_users(rule.users)
        localparts = self._localparts(rule)
        out: list[wire.SSHRule] = []

        def emit(principals: list[wire.SSHPrincipal], user_id: int | None) -> None:
            base: wire.SSHRule = {"principals": principals, "sshUsers": users, "action": action}
            if rule.accept_env:
                base["acceptEnv"] = rule.accept_env
            out.append(base)
            if user_id is not None and user_id in localparts:
                login = localparts[user_id]
                mapped = base.copy()
                mapped["sshUsers"] = {login: login}
                out.append(mapped)

        owner = resolver.tailnet.node_user_id(node)
        if to_self and owner is not None and sources.by_user.get(owner):
            emit(sources.by_user[owner], owner)
        if is_destination:
            if has_localpart:
                for uid, principals in sources.by_user.items():
                    emit(principals, uid)
                if sources.tagged:
                    emit(sources.tagged, None)
            else:
                everyone = [p for principals in sources.by_user.values() for p in principals] + sources.tagged
                if everyone:
                    emit(everyone, None)
        elif others and has_localpart and node.has_ip_in(sources.addresses):
            # With localpart users, a source node also gets the rule for its own user's devices.
            if node.is_tagged:
                emit(_principals(node.addr_set), None)
            elif owner is not None and sources.by_user.get(owner):
                emit(sources.by_user[owner], owner)
        return out
