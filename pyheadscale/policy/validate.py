"""Semantic validation: what Tailscale's control server rejects in a well-formed policy.

Every check raises :class:`PolicyError` naming the entry (``grants[3].dst[1]``)
and its position. Checks that need the tailnet (user lookups, associated
e-mail domains) take a :class:`Tailnet`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from datetime import timedelta

from pyheadscale.policy.aliases import Alias, AliasKind, Autogroup, Tailnet, user_domain_of
from pyheadscale.policy.model import Path, Policy, SSHRule
from pyheadscale.policy.netset import CGNAT
from pyheadscale.policy.ports import ALL_PORTS, protocol_allows_ports

_ACL_SRC_AUTOGROUPS = {
    Autogroup.MEMBER,
    Autogroup.TAGGED,
    Autogroup.DANGER_ALL,
    Autogroup.ADMIN,
    Autogroup.OWNER,
}
_ACL_DST_AUTOGROUPS = {
    Autogroup.INTERNET,
    Autogroup.MEMBER,
    Autogroup.TAGGED,
    Autogroup.SELF,
    Autogroup.ADMIN,
    Autogroup.OWNER,
}
_SSH_SRC_AUTOGROUPS = {Autogroup.MEMBER, Autogroup.TAGGED, Autogroup.ADMIN, Autogroup.OWNER}
_SSH_DST_AUTOGROUPS = {Autogroup.MEMBER, Autogroup.TAGGED, Autogroup.SELF}
_NODE_ATTR_AUTOGROUPS = {Autogroup.MEMBER, Autogroup.TAGGED, Autogroup.ADMIN, Autogroup.OWNER}
_RESERVED_POOL_RANGES = (ipaddress.ip_network("100.100.100.0/24"), ipaddress.ip_network("100.115.92.0/23"))
_MAX_CHECK_PERIOD = timedelta(days=7)
#: Capabilities in the tailscale.com domain that grants may still hand out.
_ALLOWED_TAILSCALE_CAPS = frozenset(
    "tailscale.com/cap/" + name for name in ("drive", "relay", "webui", "kubernetes", "tsidp", "secrets")
)
_SELF_SOURCES = {AliasKind.USER, AliasKind.USER_DOMAIN, AliasKind.GROUP}


def validate_policy(policy: Policy, tailnet: Tailnet) -> None:
    """Raise :class:`PolicyError` for the first problem found, in document order."""
    checker = _Checker(policy, tailnet)
    checker.check_tag_owners()
    checker.check_acls()
    checker.check_grants()
    checker.check_ssh()
    checker.check_node_attrs()
    checker.check_auto_approvers()
    checker.check_user_references()


class _Checker:
    def __init__(self, policy: Policy, tailnet: Tailnet) -> None:
        self.policy = policy
        self.tailnet = tailnet

    def fail(self, message: str, path: Path) -> None:
        raise self.policy.error(message, path)

    def check_reference(
        self, alias: Alias, path: Path, allowed_autogroups: set[Autogroup], side: str
    ) -> None:
        """Groups, tags and hosts must be defined; autogroups must be allowed in this position."""
        policy = self.policy
        if alias.kind is AliasKind.GROUP and alias.text not in policy.groups:
            self.fail(f'group not defined in policy: "{alias.text}"', path)
        elif alias.kind is AliasKind.TAG and alias.text not in policy.tag_owners:
            self.fail(f'tag not found: "{alias.text}"', path)
        elif alias.kind is AliasKind.HOST and alias.text not in policy.hosts:
            self.fail(f'"{alias.text}": invalid address (host not defined in policy)', path)
        elif alias.kind is AliasKind.USER_DOMAIN:
            self.check_associated_domain(user_domain_of(alias), path)
        elif alias.kind is AliasKind.AUTOGROUP:
            group = Autogroup(alias.text)
            if group is Autogroup.DANGER_ALL and side == "dst":
                self.fail("cannot use autogroup:danger-all as a dst", path)
            if group is Autogroup.SELF and side == "src":
                self.fail('"autogroup:self" not valid on the src side of a rule', path)
            if group is Autogroup.INTERNET and side == "src":
                self.fail("autogroup:internet can only be used in ACL destinations", path)
            if group not in allowed_autogroups:
                self.fail(f'autogroup "{alias.text}" is not supported as {side}', path)

    def check_associated_domain(self, domain: str, path: Path) -> None:
        """``user:*@domain`` and ``localpart:*@domain`` need a domain the tailnet owns."""
        if not self.tailnet.users:
            return  # Checking a policy file on its own: there is no tailnet to own a domain yet.
        # The tailnet's domain is its owner's e-mail domain; Tailscale compares it case-sensitively.
        owner_domains = {
            u.email.rpartition("@")[2] for u in self.tailnet.users if u.id == self.tailnet.owner_id
        }
        if domain not in owner_domains:
            self.fail(
                f"{domain} is not associated with this Tailnet and cannot be used in "
                "user:*@<domain> expressions",
                path,
            )

    def check_tag_owners(self) -> None:
        policy = self.policy
        for tag, owners in policy.tag_owners.items():
            for i, owner in enumerate(owners):
                path: Path = ("tagOwners", tag, i)
                if owner.startswith("group:") and owner not in policy.groups:
                    self.fail(f'group not defined in policy: "{owner}"', path)
                if owner.startswith("tag:") and owner not in policy.tag_owners:
                    self.fail(f'tag not found: "{owner}"', path)

    def check_self_sources(self, sources: Iterable[Alias], path: Path, allow_wildcard: bool) -> None:
        for i, source in enumerate(sources):
            ok = source.kind in _SELF_SOURCES or source.is_autogroup(Autogroup.MEMBER)
            ok = ok or (allow_wildcard and source.kind is AliasKind.WILDCARD)
            if not ok:
                self.fail(
                    "autogroup:self can only be used with users, groups, or supported autogroups",
                    (*path, "src", i),
                )

    def check_acls(self) -> None:
        for acl in self.policy.acls or []:
            for i, source in enumerate(acl.sources):
                self.check_reference(source, (*acl.path, "src", i), _ACL_SRC_AUTOGROUPS, "src")
            for i, destination in enumerate(acl.destinations):
                self.check_reference(destination.alias, (*acl.path, "dst", i), _ACL_DST_AUTOGROUPS, "dst")
            if not protocol_allows_ports(acl.proto):
                for i, destination in enumerate(acl.destinations):
                    if destination.ports != (ALL_PORTS,):
                        self.fail(
                            f'protocol "{acl.proto}" does not support specific ports, only "*" is allowed',
                            (*acl.path, "dst", i),
                        )
            if any(d.alias.is_autogroup(Autogroup.SELF) for d in acl.destinations):
                self.check_self_sources(acl.sources, acl.path, allow_wildcard=True)

    def check_grants(self) -> None:
        for grant in self.policy.grants or []:
            if not grant.ip and not grant.app:
                self.fail("ip and app can not both be empty", grant.path)
            for name in grant.app or {}:
                if "/" not in name or "://" in name:
                    self.fail(
                        "capability name must have the form {domain}/{path}", (*grant.path, "app", name)
                    )
                if name.startswith("tailscale.com/") and name not in _ALLOWED_TAILSCALE_CAPS:
                    self.fail(
                        "capability name must not be in the tailscale.com domain", (*grant.path, "app", name)
                    )
            for i, destination in enumerate(grant.destinations):
                path = (*grant.path, "dst", i)
                if grant.app and destination.is_autogroup(Autogroup.INTERNET):
                    self.fail("cannot use app grants with autogroup:internet", path)
                if destination.network is not None and destination.network.prefixlen == 0:
                    self.fail(
                        f'dst "{destination.network}": to allow all IP addresses, use "*" or '
                        '"autogroup:internet"',
                        path,
                    )
            for i, source in enumerate(grant.sources):
                self.check_reference(source, (*grant.path, "src", i), _ACL_SRC_AUTOGROUPS, "src")
            for i, destination in enumerate(grant.destinations):
                self.check_reference(destination, (*grant.path, "dst", i), _ACL_DST_AUTOGROUPS, "dst")
            for i, tag in enumerate(grant.via):
                if tag not in self.policy.tag_owners:
                    self.fail(f'tag "{tag}" not found', (*grant.path, "via", i))
            if any(d.is_autogroup(Autogroup.SELF) for d in grant.destinations):
                self.check_self_sources(grant.sources, grant.path, allow_wildcard=False)

    def check_ssh(self) -> None:
        for rule in self.policy.ssh:
            self.check_ssh_rule(rule)

    def check_ssh_rule(self, rule: SSHRule) -> None:
        if not rule.action:
            self.fail("action must be specified", rule.path)
        if not rule.users:
            self.fail("users must be specified", rule.path)
        for i, user in enumerate(rule.users):
            if user in ("", "*"):
                self.fail(f'user "{user}" is not valid', (*rule.path, "users", i))
            local, at, domain = user.removeprefix("localpart:").rpartition("@")
            if user.startswith("localpart:") and at and local == "*" and domain:
                self.check_associated_domain(domain, (*rule.path, "users", i))
        for env in rule.accept_env:
            if env == "":
                self.fail("acceptEnv values cannot be empty", (*rule.path, "acceptEnv"))
        for i, source in enumerate(rule.sources):
            self.check_reference(source, (*rule.path, "src", i), _SSH_SRC_AUTOGROUPS, "src")
        for i, destination in enumerate(rule.destinations):
            path = (*rule.path, "dst", i)
            if destination.kind is AliasKind.HOST:
                self.fail(f'invalid dst "{destination.text}"', path)
            self.check_reference(destination, path, _SSH_DST_AUTOGROUPS, "dst")
        self.check_ssh_combination(rule)
        if rule.check_period is not None or rule.check_period_always:
            if rule.action != "check":
                self.fail('checkPeriod is only valid with action "check"', (*rule.path, "checkPeriod"))
            period = rule.check_period
            if period is not None and period < timedelta(0):
                self.fail(
                    f"checkPeriod {_go_duration(period)} must be a positive duration",
                    (*rule.path, "checkPeriod"),
                )
            if period is not None and period > _MAX_CHECK_PERIOD:
                self.fail(
                    f"checkPeriod {_go_duration(period)} is above the max (168h)", (*rule.path, "checkPeriod")
                )

    def check_ssh_combination(self, rule: SSHRule) -> None:
        """Tagged sources may not reach user-owned devices; user destinations only from that same user."""
        tagged_source = any(s.kind is AliasKind.TAG or s.is_autogroup(Autogroup.TAGGED) for s in rule.sources)
        group_source = any(
            s.kind in (AliasKind.GROUP, AliasKind.USER_DOMAIN) or s.is_autogroup(Autogroup.MEMBER)
            for s in rule.sources
        )
        user_sources = {s.text for s in rule.sources if s.kind is AliasKind.USER}
        for i, destination in enumerate(rule.destinations):
            path = (*rule.path, "dst", i)
            if destination.kind is AliasKind.USER:
                if tagged_source:
                    self.fail(
                        f"tags in SSH source cannot access user-owned devices ({destination.text})", path
                    )
                if group_source or user_sources != {destination.text}:
                    self.fail(
                        f'user destination "{destination.text}" requires source to contain only that '
                        "same user; use autogroup:self instead",
                        path,
                    )
            if destination.is_autogroup(Autogroup.SELF) and tagged_source:
                self.fail("autogroup:self destination requires source to contain only users or groups", path)
            if destination.is_autogroup(Autogroup.MEMBER) and tagged_source:
                self.fail("tags in SSH source cannot access autogroup:member (user-owned devices)", path)

    def check_node_attrs(self) -> None:
        for entry in self.policy.node_attrs:
            for i, target in enumerate(entry.targets):
                self.check_reference(target, (*entry.path, "target", i), _NODE_ATTR_AUTOGROUPS, "target")
            for i, pool in enumerate(entry.ip_pool):
                path = (*entry.path, "ipPool", i)
                if pool.prefixlen < CGNAT.prefixlen or not pool.subnet_of(CGNAT):  # type: ignore[arg-type]
                    self.fail(f"IPPool({pool}): network must be within {CGNAT}", path)
                if any(pool.overlaps(reserved) for reserved in _RESERVED_POOL_RANGES):
                    self.fail(f"IPPool({pool}): network within reserved range", path)

    def check_auto_approvers(self) -> None:
        policy = self.policy
        for network, approvers in policy.route_approvers.items():
            for i, approver in enumerate(approvers):
                self.check_approver(approver, ("autoApprovers", "routes", str(network), i))
        for i, approver in enumerate(policy.exit_node_approvers):
            self.check_approver(approver, ("autoApprovers", "exitNode", i))

    def check_approver(self, approver: Alias, path: Path) -> None:
        if approver.kind is AliasKind.GROUP and approver.text not in self.policy.groups:
            self.fail(f'group not defined in policy: "{approver.text}"', path)
        if approver.kind is AliasKind.TAG and approver.text not in self.policy.tag_owners:
            self.fail(f'tag not found: "{approver.text}"', path)

    def check_user_references(self) -> None:
        """A user token matching several users is ambiguous and rejected (it would grant nothing)."""
        for token, path in user_references(self.policy):
            if len(self.tailnet.find_users(token)) > 1:
                self.fail(f'multiple users found: token "{token}"', path)


def user_references(policy: Policy) -> Iterator[tuple[str, Path]]:
    """Every user token in the policy, with where it is: groups, ACLs, grants, SSH, nodeAttrs, tagOwners and
    autoApprovers."""

    def users_among(aliases: Iterable[Alias], path: Path) -> Iterator[tuple[str, Path]]:
        for i, alias in enumerate(aliases):
            if alias.kind is AliasKind.USER:
                yield alias.text, (*path, i)

    def user_texts(texts: Iterable[str], path: Path) -> Iterator[tuple[str, Path]]:
        for i, text in enumerate(texts):
            if "@" in text and not text.startswith(("group:", "tag:", "autogroup:")):
                yield text, (*path, i)

    for name, members in policy.groups.items():
        yield from user_texts(members, ("groups", name))
    for tag, owners in policy.tag_owners.items():
        yield from user_texts(owners, ("tagOwners", tag))
    for acl in policy.acls or []:
        yield from users_among(acl.sources, (*acl.path, "src"))
        yield from users_among((d.alias for d in acl.destinations), (*acl.path, "dst"))
    for grant in policy.grants or []:
        yield from users_among(grant.sources, (*grant.path, "src"))
        yield from users_among(grant.destinations, (*grant.path, "dst"))
    for rule in policy.ssh:
        yield from users_among(rule.sources, (*rule.path, "src"))
        yield from users_among(rule.destinations, (*rule.path, "dst"))
    for entry in policy.node_attrs:
        yield from users_among(entry.targets, (*entry.path, "target"))
    for network, approvers in policy.route_approvers.items():
        yield from users_among(approvers, ("autoApprovers", "routes", str(network)))
    yield from users_among(policy.exit_node_approvers, ("autoApprovers", "exitNode"))


def ambiguous_user_tokens(policy: Policy, tailnet: Tailnet) -> list[str]:
    """The policy's user tokens that match more than one user (each grants nothing while it does)."""
    found = {token for token, _ in user_references(policy) if len(tailnet.find_users(token)) > 1}
    return sorted(found)


def _go_duration(period: timedelta) -> str:
    """Render like Go's ``time.Duration.String`` for the values a checkPeriod takes."""
    total = int(period.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{sign}{minutes}m{seconds}s"
    return f"{sign}{seconds}s"
