"""The policy's own assertions: ``tests`` (packet reachability) and ``sshTests`` (SSH logins).

A policy whose assertions fail is rejected, like any other invalid policy.
Reachability is judged against the global filter: every address of the
source must reach some address of the destination on the given port.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pyheadscale.policy.aliases import Alias, AliasKind, AliasSyntaxError, Autogroup, Resolver, parse_alias
from pyheadscale.policy.filter import Rule
from pyheadscale.policy.model import Policy, PolicyTest, SSHTest
from pyheadscale.policy.ports import DEFAULT_PROTOCOLS, PortRange, parse_destination, protocol_numbers
from pyheadscale.policy.types import PolicyError, PolicyNode
from pyheadscale.tailcfg.ssh import SSHPolicy

_TEST_PROTOCOLS = ("", "tcp", "udp", "sctp")


def _parse(text: str) -> Alias | None:
    try:
        return parse_alias(text)
    except AliasSyntaxError:
        return None


def _test_failed(policy: Policy, path: tuple[str | int, ...], why: str) -> PolicyError:
    return policy.error(f"test(s) failed: {why}", path)


def run_policy_tests(policy: Policy, resolver: Resolver, rules: Sequence[Rule]) -> None:
    """Raise :class:`PolicyError` when any ``tests`` entry is malformed or does not hold."""
    for test in policy.tests:
        problem = _check_policy_test(policy, resolver, rules, test)
        if problem:
            raise _test_failed(policy, test.path, problem)


def _check_policy_test(
    policy: Policy, resolver: Resolver, rules: Sequence[Rule], test: PolicyTest
) -> str | None:
    if not test.accept and not test.deny:
        return 'test entry must have at least one of "accept" or "deny"'
    if test.proto not in _TEST_PROTOCOLS:
        return f"test protocol must be tcp, udp, sctp, or empty, got {test.proto!r}"
    source = _parse(test.src)
    if source is None or not _known(policy, source):
        return f"source {test.src!r} is not valid"
    sources = resolver.resolve(source)
    if not sources:
        return f"source {test.src!r} resolved to no addresses"
    protocols = protocol_numbers(test.proto) or DEFAULT_PROTOCOLS
    for destinations, want in ((test.accept, True), (test.deny, False)):
        for text in destinations:
            try:
                alias_text, ports = parse_destination(text)
            except ValueError as exc:
                return f"destination {text!r}: {exc}"
            alias = _parse(alias_text)
            if alias is None or not _known(policy, alias) or alias.is_autogroup(Autogroup.INTERNET):
                return f"destination {text!r} is not valid"
            if len(ports) != 1 or ports[0].first != ports[0].last:
                return f"destination {text!r} must name a single port"
            if alias.network is not None and "/" in alias_text:
                return f"destination {text!r} must be a single host, not a CIDR range"
            host = policy.hosts.get(alias.text) if alias.kind is AliasKind.HOST else None
            if host is not None and host.num_addresses > 1:
                return f"destination {text!r} must be a single host, not a CIDR range"
            targets = resolver.resolve(alias)
            if not targets:
                return f"destination {text!r} resolved to no addresses"
            allowed = all(
                _reaches(rules, network, targets, ports[0], protocols) for network in sources.networks()
            )
            if allowed != want:
                return f"{test.src} -> {text}: expected {'ALLOWED' if want else 'DENIED'}"
    return None


def _known(policy: Policy, alias: Alias) -> bool:
    if alias.kind is AliasKind.GROUP:
        return alias.text in policy.groups
    if alias.kind is AliasKind.TAG:
        return alias.text in policy.tag_owners
    if alias.kind is AliasKind.HOST:
        return alias.text in policy.hosts
    return True


def _reaches(
    rules: Sequence[Rule], source: Any, targets: Any, port: PortRange, protocols: Sequence[int]
) -> bool:
    for rule in rules:
        if not rule.sources.overlaps_network(source):
            continue
        if rule.protocols and not set(rule.protocols) & set(protocols):
            continue
        for dst in rule.dst_ports:
            if (
                dst.addresses.overlaps(targets)
                and dst.ports.first <= port.first
                and port.last <= dst.ports.last
            ):
                return True
    return False


SSHPolicyFor = Callable[[PolicyNode], SSHPolicy | None]


def run_ssh_tests(policy: Policy, resolver: Resolver, ssh_policy_for: SSHPolicyFor) -> None:
    """Raise :class:`PolicyError` when any ``sshTests`` entry is malformed or does not hold."""
    for test in policy.ssh_tests:
        for i, text in enumerate(test.dst):
            alias = _parse(text)
            if alias is None:
                raise _test_failed(policy, (*test.path, "dst", i), f"invalid dst {text!r}")
            problem = _disallowed_ssh_dst(policy, alias)
            if problem:
                raise policy.error(problem, (*test.path, "dst", i))
    for test in policy.ssh_tests:
        problem = _check_ssh_test(policy, resolver, ssh_policy_for, test)
        if problem:
            raise _test_failed(policy, test.path, problem)


def _disallowed_ssh_dst(policy: Policy, alias: Alias) -> str | None:
    if alias.is_autogroup(Autogroup.INTERNET) or (
        alias.network is not None and alias.network.num_addresses > 1
    ):
        return f'SSH tests dst contains disallowed element "{alias.text}"'
    if alias.kind is AliasKind.TAG and alias.text not in policy.tag_owners:
        return f'SSH tests dst contains unknown tag "{alias.text}"'
    host = policy.hosts.get(alias.text) if alias.kind is AliasKind.HOST else None
    if host is not None and host.num_addresses > 1:
        return f'SSH tests dst contains disallowed element "{alias.text}"'
    return None


def _check_ssh_test(
    policy: Policy, resolver: Resolver, ssh_policy_for: SSHPolicyFor, test: SSHTest
) -> str | None:
    source = _parse(test.src) if test.src else None
    if source is None:
        return "SSH tests entry must have a non-empty src"
    if not test.dst:
        return "SSH tests entry must have at least one dst"
    sources = resolver.resolve(source)
    if not sources:
        return f"source {test.src!r} resolved to no addresses"
    if not (test.accept or test.deny or test.check):
        return "no accept, deny, or check assertions specified"
    tailnet = resolver.tailnet
    source_users = resolver.user_ids_of(source) if source.kind is AliasKind.USER else None
    targets: dict[int, PolicyNode] = {}
    for text in test.dst:
        alias = parse_alias(text)
        if alias.is_autogroup(Autogroup.SELF):
            matched = tailnet.nodes_of_users(source_users or set())
        elif alias.network is not None and alias.network.version == 6:
            # Tailscale looks sshTests destinations up by IPv4 address: a bare IPv6 address names no node.
            matched = []
        else:
            addresses = resolver.resolve(alias)
            matched = [n for n in tailnet.nodes.values() if n.has_ip_in(addresses)]
        if not matched:
            return f"dst alias {text!r} resolved to no nodes"
        targets.update((n.id, n) for n in matched)
    source_ips = [str(ip) for n in tailnet.nodes.values() for ip in n.ips if sources.contains_ip(ip)]
    if not source_ips:
        source_ips = sources.to_strings()
    for node in targets.values():
        node_policy = ssh_policy_for(node) or {"rules": []}
        for user in test.accept:
            if not all(_login(node_policy, ip, user)[0] for ip in source_ips):
                return f"{test.src}/{user} -> {node.hostname}: expected ALLOWED"
        for user in test.deny:
            if any(_login(node_policy, ip, user)[0] for ip in source_ips):
                return f"{test.src}/{user} -> {node.hostname}: expected DENIED"
        for user in test.check:
            if not all(_login(node_policy, ip, user)[1] for ip in source_ips):
                return f"{test.src}/{user} -> {node.hostname}: expected ALLOWED via check"
    return None


def _login(ssh_policy: SSHPolicy, source_ip: str, user: str) -> tuple[bool, bool]:
    """Whether ``user`` may log in from ``source_ip``, and whether a check rule is involved."""
    allowed = checked = False
    for rule in ssh_policy.get("rules", []):
        if not any(p.get("nodeIP") == source_ip for p in rule["principals"]):
            continue
        if not _user_allowed(rule["sshUsers"], user):
            continue
        allowed = True
        if "holdAndDelegate" in rule["action"]:
            checked = True
    return allowed, checked


def _user_allowed(ssh_users: dict[str, str], user: str) -> bool:
    if not user:
        return False
    if user in ssh_users:
        return ssh_users[user] != ""
    if user == "root":
        return False
    return ssh_users.get("*", "") != ""
