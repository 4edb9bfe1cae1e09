"""The policy file's structure: parsing HuJSON into typed entries.

This module checks shape (field names, value types, alias and port syntax);
:mod:`pyheadscale.policy.validate` checks meaning (references that must
exist, autogroups allowed in a position, combinations Tailscale rejects).
Errors name the offending entry as a path like ``acls[2].dst[0]`` plus its
line and column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pyheadscale.policy import hujson
from pyheadscale.policy.aliases import Alias, AliasKind, AliasSyntaxError, parse_alias, parse_ip_or_prefix
from pyheadscale.policy.netset import IPNetwork
from pyheadscale.policy.ports import PortRange, parse_destination, parse_protocol, parse_protocol_ports
from pyheadscale.policy.types import PolicyError
from pyheadscale.tags import tag_problem

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Destination:
    """An ACL destination: an alias and the ports it opens."""

    alias: Alias
    ports: tuple[PortRange, ...]


@dataclass(frozen=True)
class ProtocolPorts:
    """One ``ip`` entry of a grant. ``protocol`` is ``""`` for the TCP/UDP/ICMP default, ``"*"`` for all."""

    protocol: str
    ports: tuple[PortRange, ...]


@dataclass
class ACL:
    path: Path
    proto: str
    sources: list[Alias]
    destinations: list[Destination]


@dataclass
class Grant:
    path: Path
    sources: list[Alias]
    destinations: list[Alias]
    ip: list[ProtocolPorts]
    app: dict[str, list[Any]] | None
    via: list[str]


@dataclass
class SSHRule:
    path: Path
    action: str
    sources: list[Alias]
    destinations: list[Alias]
    users: list[str]
    check_period: timedelta | None
    check_period_always: bool
    accept_env: list[str]


@dataclass
class NodeAttr:
    path: Path
    targets: list[Alias]
    attrs: list[str]
    ip_pool: list[IPNetwork]


@dataclass
class PolicyTest:
    path: Path
    src: str
    proto: str
    accept: list[str]
    deny: list[str]


@dataclass
class SSHTest:
    path: Path
    src: str
    dst: list[str]
    accept: list[str]
    deny: list[str]
    check: list[str]


@dataclass
class Policy:
    """A parsed (not yet validated) policy; ``document`` keeps source positions for errors."""

    document: hujson.Document
    groups: dict[str, list[str]] = field(default_factory=dict)
    hosts: dict[str, IPNetwork] = field(default_factory=dict)
    tag_owners: dict[str, list[str]] = field(default_factory=dict)
    acls: list[ACL] | None = None
    grants: list[Grant] | None = None
    node_attrs: list[NodeAttr] = field(default_factory=list)
    route_approvers: dict[IPNetwork, list[Alias]] = field(default_factory=dict)
    exit_node_approvers: list[Alias] = field(default_factory=list)
    ssh: list[SSHRule] = field(default_factory=list)
    tests: list[PolicyTest] = field(default_factory=list)
    ssh_tests: list[SSHTest] = field(default_factory=list)
    randomize_client_port: bool = False

    def error(self, message: str, path: Path) -> PolicyError:
        return PolicyError(message, format_path(path), self.document.position_of(path))

    @property
    def has_filter_rules(self) -> bool:
        """False when neither ``acls`` nor ``grants`` is present: then everything is allowed."""
        return self.acls is not None or self.grants is not None


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> timedelta:
    """Parse a Go ``time.ParseDuration`` string such as ``"1h30m"`` or ``"-1m"``."""
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return timedelta(0)
    position = 0
    seconds = 0.0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if match is None:
            raise ValueError(f'time: invalid duration "{text}"')
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    return timedelta(seconds=-seconds if text.startswith("-") else seconds)


class _Reader:
    """Reads typed values out of the raw document, failing with the value's path."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def fail(self, message: str, path: Path) -> PolicyError:
        return self.policy.error(message, path)

    def fields(self, value: Any, path: Path, allowed: tuple[str, ...]) -> dict[str, tuple[Any, Path]]:
        """An object's fields by canonical name; names match case-insensitively, ``#`` keys are comments."""
        if not isinstance(value, dict):
            raise self.fail(f"expected an object, got {_json_type(value)}", path)
        canonical = {name.lower(): name for name in allowed}
        out: dict[str, tuple[Any, Path]] = {}
        for key, item in value.items():
            if key.startswith("#"):
                continue
            name = canonical.get(key.lower())
            if name is None:
                raise self.fail(f"unknown field {key!r}", (*path, key))
            if name in out:
                raise self.fail(f"duplicate field {key!r}", (*path, key))
            out[name] = (item, (*path, key))
        return out

    def entries(self, value: Any, path: Path) -> list[tuple[str, Any, Path]]:
        """An object's (key, value, the value's path), in document order."""
        if not isinstance(value, dict):
            raise self.fail("expected an object", path)
        return [(key, item, (*path, key)) for key, item in value.items()]

    def string(self, value: Any, path: Path) -> str:
        if not isinstance(value, str):
            raise self.fail(f"expected a string, got {_json_type(value)}", path)
        return value

    def strings(self, value: Any, path: Path) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(f"expected an array of strings, got {_json_type(value)}", path)
        return [self.string(item, (*path, i)) for i, item in enumerate(value)]

    def items(self, value: Any, path: Path) -> list[tuple[Any, Path]]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(f"expected an array, got {_json_type(value)}", path)
        return [(item, (*path, i)) for i, item in enumerate(value)]

    def alias(self, text: str, path: Path) -> Alias:
        try:
            return parse_alias(text)
        except AliasSyntaxError as exc:
            raise self.fail(str(exc), path) from None

    def aliases(self, value: Any, path: Path, *, strip: bool = False) -> list[Alias]:
        """The aliases in an array of strings (`strip`: each without surrounding white space first)."""
        texts = self.strings(value, path)
        return [self.alias(text.strip() if strip else text, (*path, i)) for i, text in enumerate(texts)]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


_TOP_LEVEL = (
    "groups",
    "hosts",
    "tagOwners",
    "acls",
    "grants",
    "nodeAttrs",
    "autoApprovers",
    "ssh",
    "tests",
    "sshTests",
    "randomizeClientPort",
)


def parse_policy(text: str) -> Policy:
    """Parse policy text; raises :class:`PolicyError` for malformed HuJSON or a malformed entry."""
    try:
        document = hujson.parse(text)
    except hujson.HuJSONError as exc:
        raise PolicyError(f"parsing HuJSON: {exc.message}", None, exc.position) from None
    policy = Policy(document=document)
    reader = _Reader(policy)
    top = reader.fields(document.value, (), _TOP_LEVEL)
    if "groups" in top:
        policy.groups = _parse_groups(reader, *top["groups"])
    if "hosts" in top:
        policy.hosts = _parse_hosts(reader, *top["hosts"])
    if "tagOwners" in top:
        policy.tag_owners = _parse_tag_owners(reader, *top["tagOwners"])
    if "acls" in top:
        policy.acls = [_parse_acl(reader, *item) for item in reader.items(*top["acls"])]
    if "grants" in top:
        policy.grants = [_parse_grant(reader, *item) for item in reader.items(*top["grants"])]
    if "nodeAttrs" in top:
        policy.node_attrs = [_parse_node_attr(reader, *item) for item in reader.items(*top["nodeAttrs"])]
    if "autoApprovers" in top:
        _parse_auto_approvers(reader, policy, *top["autoApprovers"])
    if "ssh" in top:
        policy.ssh = [_parse_ssh(reader, *item) for item in reader.items(*top["ssh"])]
    if "tests" in top:
        policy.tests = [_parse_test(reader, *item) for item in reader.items(*top["tests"])]
    if "sshTests" in top:
        policy.ssh_tests = [_parse_ssh_test(reader, *item) for item in reader.items(*top["sshTests"])]
    if "randomizeClientPort" in top:
        value, path = top["randomizeClientPort"]
        if not isinstance(value, bool):
            raise reader.fail("expected a boolean", path)
        policy.randomize_client_port = value
    return policy


def _parse_groups(reader: _Reader, value: Any, path: Path) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name, members, member_path in reader.entries(value, path):
        if not name.startswith("group:"):
            raise reader.fail(f"group name {name!r} must start with 'group:'", member_path)
        if not isinstance(members, list):
            raise reader.fail(f"group {name!r} must be an array of users", member_path)
        groups[name] = reader.strings(members, member_path)
    # Nested groups are rejected; report the first offender in a stable order.
    for name in sorted(groups, reverse=True):
        for i, member in enumerate(groups[name]):
            if member.startswith("group:"):
                raise reader.fail(
                    f'groups["{name}"]: "{member}": group members cannot be recursive', (*path, name, i)
                )
    for name, members in groups.items():
        for i, member in enumerate(members):
            if "@" not in member:
                raise reader.fail(f"group member {member!r} is not a user (must contain @)", (*path, name, i))
    return groups


def _parse_hosts(reader: _Reader, value: Any, path: Path) -> dict[str, IPNetwork]:
    hosts: dict[str, IPNetwork] = {}
    for name, address, host_path in reader.entries(value, path):
        if "@" in name or ":" in name:
            raise reader.fail(f"invalid host name {name!r}", host_path)
        network = parse_ip_or_prefix(reader.string(address, host_path))
        if network is None:
            raise reader.fail(f"host {name!r} has invalid address {address!r}", host_path)
        hosts[name] = network
    return hosts


def _parse_tag_owners(reader: _Reader, value: Any, path: Path) -> dict[str, list[str]]:
    owners: dict[str, list[str]] = {}
    for tag, tag_owners, tag_path in reader.entries(value, path):
        problem = tag_problem(tag)
        if problem:
            raise reader.fail(f'tagOwners["{tag}"]: {problem}', tag_path)
        owners[tag] = reader.strings(tag_owners, tag_path)
        for i, owner in enumerate(owners[tag]):
            alias = reader.alias(owner, (*tag_path, i))
            if alias.kind not in (AliasKind.USER, AliasKind.GROUP, AliasKind.TAG, AliasKind.AUTOGROUP):
                raise reader.fail(f"invalid tag owner {owner!r}", (*tag_path, i))
    return owners


def _parse_acl(reader: _Reader, value: Any, path: Path) -> ACL:
    fields = reader.fields(value, path, ("action", "proto", "src", "dst", "ports", "users"))
    action = reader.string(*fields["action"]) if "action" in fields else ""
    if action != "accept":
        raise reader.fail(f'action="{action}" is not supported', fields.get("action", (None, path))[1])
    proto = ""
    if "proto" in fields:
        try:
            proto = parse_protocol(reader.string(*fields["proto"]))
        except ValueError as exc:
            raise reader.fail(str(exc), fields["proto"][1]) from None
    sources = reader.aliases(*fields["src"]) if "src" in fields else []
    destinations: list[Destination] = []
    if "dst" in fields:
        dst_value, dst_path = fields["dst"]
        for i, text in enumerate(reader.strings(dst_value, dst_path)):
            try:
                alias_text, ports = parse_destination(text)
            except ValueError as exc:
                raise reader.fail(f"dst={text!r}: {exc}", (*dst_path, i)) from None
            destinations.append(Destination(reader.alias(alias_text, (*dst_path, i)), ports))
    return ACL(path=path, proto=proto, sources=sources, destinations=destinations)


def _parse_grant(reader: _Reader, value: Any, path: Path) -> Grant:
    fields = reader.fields(value, path, ("src", "dst", "ip", "app", "via"))
    ip: list[ProtocolPorts] = []
    if "ip" in fields:
        ip_value, ip_path = fields["ip"]
        for i, text in enumerate(reader.strings(ip_value, ip_path)):
            try:
                protocol, ports = parse_protocol_ports(text)
            except ValueError as exc:
                raise reader.fail(str(exc), (*ip_path, i)) from None
            ip.append(ProtocolPorts(protocol, ports))
    app: dict[str, list[Any]] | None = None
    if "app" in fields:
        app_value, app_path = fields["app"]
        if app_value is not None:
            if not isinstance(app_value, dict):
                raise reader.fail("app must be an object of capability name to values", app_path)
            app = {}
            for name, values in app_value.items():
                if not isinstance(values, list):
                    raise reader.fail(f"app capability {name!r} must be an array", (*app_path, name))
                app[name] = values
    via: list[str] = []
    if "via" in fields:
        via = reader.strings(*fields["via"])
        for i, tag in enumerate(via):
            if tag_problem(tag):
                raise reader.fail("via can only be a tag", (*fields["via"][1], i))
    return Grant(
        path=path,
        sources=reader.aliases(*fields["src"]) if "src" in fields else [],
        destinations=reader.aliases(*fields["dst"]) if "dst" in fields else [],
        ip=ip,
        app=app,
        via=via,
    )


def _parse_ssh(reader: _Reader, value: Any, path: Path) -> SSHRule:
    fields = reader.fields(value, path, ("action", "src", "dst", "users", "checkPeriod", "acceptEnv"))
    action = reader.string(*fields["action"]).strip() if "action" in fields else ""
    if action not in ("", "accept", "check"):
        raise reader.fail(f'"{action}" is not a valid action', fields["action"][1])
    sources = reader.aliases(*fields["src"], strip=True) if "src" in fields else []
    for i, alias in enumerate(sources):
        if alias.kind not in (
            AliasKind.USER,
            AliasKind.USER_DOMAIN,
            AliasKind.GROUP,
            AliasKind.TAG,
            AliasKind.AUTOGROUP,
        ):
            raise reader.fail(
                f"alias {alias.text!r} is not supported as an SSH source", (*fields["src"][1], i)
            )
    destinations = reader.aliases(*fields["dst"], strip=True) if "dst" in fields else []
    for i, alias in enumerate(destinations):
        if alias.kind is AliasKind.WILDCARD:
            raise reader.fail("wildcard (*) is not supported as SSH destination", (*fields["dst"][1], i))
        if alias.kind not in (AliasKind.USER, AliasKind.TAG, AliasKind.AUTOGROUP, AliasKind.HOST):
            raise reader.fail(f"invalid dst {alias.text!r}", (*fields["dst"][1], i))
    check_period: timedelta | None = None
    always = False
    if "checkPeriod" in fields and fields["checkPeriod"][0] is not None:
        text = reader.string(*fields["checkPeriod"])
        if text == "always":
            always = True
        else:
            try:
                check_period = parse_go_duration(text)
            except ValueError as exc:
                raise reader.fail(str(exc), fields["checkPeriod"][1]) from None
    users = [u.strip() for u in reader.strings(*fields["users"])] if "users" in fields else []
    return SSHRule(
        path=path,
        action=action,
        sources=sources,
        destinations=destinations,
        users=users,
        check_period=check_period,
        check_period_always=always,
        accept_env=reader.strings(*fields["acceptEnv"]) if "acceptEnv" in fields else [],
    )


def _parse_node_attr(reader: _Reader, value: Any, path: Path) -> NodeAttr:
    fields = reader.fields(value, path, ("target", "attr", "ipPool", "app"))
    pools: list[IPNetwork] = []
    if "ipPool" in fields:
        for i, text in enumerate(reader.strings(*fields["ipPool"])):
            network = parse_ip_or_prefix(text)
            if network is None:
                raise reader.fail(f"invalid ipPool prefix {text!r}", (*fields["ipPool"][1], i))
            pools.append(network)
    return NodeAttr(
        path=path,
        targets=reader.aliases(*fields["target"]) if "target" in fields else [],
        attrs=reader.strings(*fields["attr"]) if "attr" in fields else [],
        ip_pool=pools,
    )


def _parse_auto_approvers(reader: _Reader, policy: Policy, value: Any, path: Path) -> None:
    fields = reader.fields(value, path, ("routes", "exitNode"))
    if "routes" in fields:
        routes_value, routes_path = fields["routes"]
        if not isinstance(routes_value, dict):
            raise reader.fail("expected an object of route to approvers", routes_path)
        for prefix_text, approvers in routes_value.items():
            network = parse_ip_or_prefix(prefix_text)
            if network is None:
                raise reader.fail(f"invalid route prefix {prefix_text!r}", (*routes_path, prefix_text))
            policy.route_approvers[network] = reader.aliases(approvers, (*routes_path, prefix_text))
    if "exitNode" in fields:
        policy.exit_node_approvers = reader.aliases(*fields["exitNode"])


def _parse_test(reader: _Reader, value: Any, path: Path) -> PolicyTest:
    fields = reader.fields(value, path, ("src", "proto", "accept", "deny"))
    proto = ""
    if "proto" in fields:
        try:
            proto = parse_protocol(reader.string(*fields["proto"]))
        except ValueError as exc:
            raise reader.fail(str(exc), fields["proto"][1]) from None
    return PolicyTest(
        path=path,
        src=reader.string(*fields["src"]) if "src" in fields else "",
        proto=proto,
        accept=reader.strings(*fields["accept"]) if "accept" in fields else [],
        deny=reader.strings(*fields["deny"]) if "deny" in fields else [],
    )


def _parse_ssh_test(reader: _Reader, value: Any, path: Path) -> SSHTest:
    fields = reader.fields(value, path, ("src", "dst", "accept", "deny", "check"))
    return SSHTest(
        path=path,
        src=reader.string(*fields["src"]).strip() if "src" in fields else "",
        dst=reader.strings(*fields["dst"]) if "dst" in fields else [],
        accept=reader.strings(*fields["accept"]) if "accept" in fields else [],
        deny=reader.strings(*fields["deny"]) if "deny" in fields else [],
        check=reader.strings(*fields["check"]) if "check" in fields else [],
    )
