"""Judging engine output against captured expectations, the way the corpus README describes.

Packet filters are compared by behaviour: both rule lists must allow exactly
the same (protocol, source, destination, port) tuples, however the rules are
split, merged or written. Capability grants must give the same capability
values between the same sources and destinations. SSH rules are compared in
order with set semantics inside a rule; peers and cap maps as sets/maps.
"""

from __future__ import annotations

import bisect
import ipaddress
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from pyheadscale.policy.netset import AddrSet, parse_addr_set
from pyheadscale.policy.ports import DEFAULT_PROTOCOLS

#: Capabilities the SaaS server adds on its own; ignored in the output unless expected.
SERVER_ADDED_CAPS = frozenset(
    [
        "https://tailscale.com/cap/" + c
        for c in ("file-sharing", "is-admin", "is-owner", "ssh", "tailnet-lock", "warn-funnel-no-https")
    ]
    + [
        "probe-udp-lifetime",
        "ssh-behavior-v1",
        "ssh-env-vars",
        "store-appc-routes",
        "tailnet-display-name",
        "default-auto-update",
        "service-host",
        "tailnet.maxKeyDuration",
        "native-ipv4",
    ]
)

_V6_OFFSET = 1 << 32  # IPv6 addresses live above the IPv4 space in one integer line.

Interval = tuple[int, int]


def _intervals(addresses: AddrSet) -> list[Interval]:
    return list(addresses.v4) + [(a + _V6_OFFSET, b + _V6_OFFSET) for a, b in addresses.v6]


def _addresses(texts: list[str]) -> AddrSet:
    return AddrSet.union_of(parse_addr_set(t) for t in texts)


def _merge(intervals: list[Interval]) -> tuple[Interval, ...]:
    out: list[list[int]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return tuple((a, b) for a, b in out)


# A "grant box": a key (protocol, or capability+value), destination intervals, port range, source intervals.
Box = tuple[Any, list[Interval], Interval, list[Interval]]


def _filter_boxes(rules: Sequence[Mapping[str, Any]]) -> list[Box]:
    boxes: list[Box] = []
    for rule in rules or []:
        sources = _intervals(_addresses(rule.get("SrcIPs") or []))
        protocols = tuple(rule.get("IPProto") or DEFAULT_PROTOCOLS)
        for dst in rule.get("DstPorts") or []:
            ports = (dst["Ports"]["First"], dst["Ports"]["Last"])
            targets = _intervals(parse_addr_set(dst["IP"]))
            boxes.extend((("proto", p), targets, ports, sources) for p in protocols)
        for grant in rule.get("CapGrant") or []:
            targets = _intervals(_addresses(grant.get("Dsts") or []))
            for name, values in (grant.get("CapMap") or {}).items():
                for value in values or [None]:
                    key = ("cap", name, json.dumps(value, sort_keys=True))
                    boxes.append((key, targets, (0, 0), sources))
    return boxes


def _canonical(
    boxes: list[Box], cuts: dict[Any, tuple[list[int], list[int]]]
) -> dict[Any, tuple[Interval, ...]]:
    """Map each elementary (key, destination cell, port cell) to the merged sources allowed there."""
    cells: dict[Any, list[Interval]] = defaultdict(list)
    for key, targets, ports, sources in boxes:
        dst_cuts, port_cuts = cuts[key]
        port_cells = range(
            bisect.bisect_left(port_cuts, ports[0]), bisect.bisect_left(port_cuts, ports[1] + 1)
        )
        for first, last in targets:
            for d in range(bisect.bisect_left(dst_cuts, first), bisect.bisect_left(dst_cuts, last + 1)):
                for p in port_cells:
                    cells[(key, d, p)].extend(sources)
    return {cell: merged for cell, srcs in cells.items() if (merged := _merge(srcs))}


def filters_equivalent(
    expected: Sequence[Mapping[str, Any]], actual: Sequence[Mapping[str, Any]]
) -> str | None:
    """``None`` when both filters allow the same traffic and capabilities, else a description."""
    expected_boxes, actual_boxes = _filter_boxes(expected), _filter_boxes(actual)
    points: dict[Any, tuple[set[int], set[int]]] = defaultdict(lambda: (set(), set()))
    for key, targets, ports, _ in expected_boxes + actual_boxes:
        dst_points, port_points = points[key]
        for first, last in targets:
            dst_points.update((first, last + 1))
        port_points.update((ports[0], ports[1] + 1))
    cuts = {key: (sorted(d), sorted(p)) for key, (d, p) in points.items()}
    want, got = _canonical(expected_boxes, cuts), _canonical(actual_boxes, cuts)
    if want == got:
        return None
    missing = sorted({cell[0] for cell in want if want.get(cell) != got.get(cell)}, key=str)
    extra = sorted({cell[0] for cell in got if want.get(cell) != got.get(cell)}, key=str)
    return f"filter differs (expected-side keys {missing[:4]}, actual-side keys {extra[:4]})"


def _without_empty(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if v not in (False, None, "", 0, [], {})}


def _ssh_action(action: dict[str, Any] | None) -> dict[str, Any]:
    action = _without_empty(action or {})
    if "holdAndDelegate" in action:
        url = urlsplit(action["holdAndDelegate"])
        action["holdAndDelegate"] = url.path + ("?" + url.query if url.query else "")
    return action


def _ssh_rule(rule: dict[str, Any]) -> dict[str, Any]:
    rule = _without_empty(rule)
    out: dict[str, Any] = {}
    for key, value in rule.items():
        if key == "principals":
            out[key] = sorted(json.dumps(_without_empty(p), sort_keys=True) for p in value)
        elif key == "acceptEnv":
            out[key] = sorted(set(value))
        elif key == "action":
            out[key] = _ssh_action(value)
        else:
            out[key] = value
    return out


def ssh_equivalent(expected: dict[str, Any] | None, actual: dict[str, Any] | None) -> str | None:
    want = [_ssh_rule(r) for r in (expected or {}).get("rules") or []]
    got = [_ssh_rule(r) for r in (actual or {}).get("rules") or []]
    if want == got:
        return None
    return f"ssh policy differs: expected {json.dumps(want)[:400]} got {json.dumps(got)[:400]}"


def _prefix_set(texts: list[str]) -> set[str]:
    return {str(ipaddress.ip_network(t, strict=False)) for t in texts or []}


def peers_equivalent(expected: dict[str, Any], actual: dict[str, Any]) -> str | None:
    if set(expected) != set(actual):
        missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
        return f"peers differ: missing {missing}, extra {extra}"
    for name, want in expected.items():
        got = actual[name]
        if _addresses(want.get("AllowedIPs") or []) != _addresses(got.get("AllowedIPs") or []):
            return f"peer {name} AllowedIPs: expected {want.get('AllowedIPs')} got {got.get('AllowedIPs')}"
        if _prefix_set(want.get("PrimaryRoutes") or []) != _prefix_set(got.get("PrimaryRoutes") or []):
            want_routes, got_routes = want.get("PrimaryRoutes"), got.get("PrimaryRoutes")
            return f"peer {name} PrimaryRoutes: expected {want_routes} got {got_routes}"
    return None


def _cap_value(value: Any) -> str:
    return json.dumps([] if value is None else value, sort_keys=True)


def cap_maps_equivalent(expected: dict[str, Any] | None, actual: dict[str, Any] | None) -> str | None:
    expected = expected or {}
    actual = {k: v for k, v in (actual or {}).items() if k in expected or k not in SERVER_ADDED_CAPS}
    if set(expected) != set(actual):
        return f"cap_map keys differ: expected {sorted(expected)} got {sorted(actual)}"
    for key, value in expected.items():
        if _cap_value(value) != _cap_value(actual[key]):
            return f"cap_map[{key}]: expected {value!r} got {actual[key]!r}"
    return None


def compare_case(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Every difference between a case's ``expected`` block and the engine's answer."""
    if bool(expected["accepted"]) != bool(actual.get("accepted")):
        return [
            f"accepted: expected {expected['accepted']} got {actual.get('accepted')} ({actual.get('error')})"
        ]
    if not expected["accepted"]:
        return []
    problems: list[str] = []
    for hostname, want in (expected.get("nodes") or {}).items():
        got = (actual.get("nodes") or {}).get(hostname)
        if got is None:
            problems.append(f"{hostname}: no output")
            continue
        for check in (
            filters_equivalent(want.get("packet_filter_rules") or [], got.get("packet_filter_rules") or []),
            ssh_equivalent(want.get("ssh_policy"), got.get("ssh_policy")),
            peers_equivalent(want.get("peers") or {}, got.get("peers") or {}),
            cap_maps_equivalent(want.get("cap_map"), got.get("cap_map")),
        ):
            if check:
                problems.append(f"{hostname}: {check}")
    return problems
