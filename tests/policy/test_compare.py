"""The corpus comparator must tell equal behaviour from different behaviour."""

from __future__ import annotations

from typing import Any

from tests.policy.compare import cap_maps_equivalent, filters_equivalent, peers_equivalent, ssh_equivalent


def rule(src: list[str], dsts: list[tuple[str, int, int]], proto: list[int] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "SrcIPs": src,
        "DstPorts": [{"IP": ip, "Ports": {"First": a, "Last": b}} for ip, a, b in dsts],
    }
    if proto is not None:
        out["IPProto"] = proto
    return out


def test_split_merged_and_rewritten_filters_are_equal() -> None:
    merged = [rule(["100.64.0.0/30"], [("100.64.0.9", 22, 22), ("100.64.0.9", 80, 443)])]
    split = [
        rule(["100.64.0.0-100.64.0.1", "100.64.0.2", "100.64.0.3"], [("100.64.0.9/32", 22, 22)]),
        rule(["100.64.0.0/30"], [("100.64.0.9", 80, 100)]),
        rule(["100.64.0.0/31", "100.64.0.2/31"], [("100.64.0.9", 101, 443)], proto=[6, 17, 1, 58]),
    ]
    assert filters_equivalent(merged, split) is None


def test_filter_differences_are_found() -> None:
    base = [rule(["100.64.0.1"], [("100.64.0.9", 22, 22)])]
    assert filters_equivalent(base, [rule(["100.64.0.1"], [("100.64.0.9", 23, 23)])])
    assert filters_equivalent(base, [rule(["100.64.0.2"], [("100.64.0.9", 22, 22)])])
    assert filters_equivalent(base, [rule(["100.64.0.1"], [("100.64.0.9", 22, 22)], proto=[6])])
    assert filters_equivalent(base, [])
    assert filters_equivalent([rule(["*"], [("*", 0, 65535)])], [rule(["100.64.0.0/10"], [("*", 0, 65535)])])


def test_capability_grants_compare_values_not_layout() -> None:
    def grant(dsts: list[str], caps: dict[str, Any]) -> dict[str, Any]:
        return {"SrcIPs": ["100.64.0.1"], "CapGrant": [{"Dsts": dsts, "CapMap": caps}]}

    together = [grant(["100.64.0.9/32"], {"example.com/cap/x": [{"a": 1}, {"b": 2}]})]
    apart = [
        grant(["100.64.0.9/32"], {"example.com/cap/x": [{"b": 2}]}),
        grant(["100.64.0.9/32"], {"example.com/cap/x": [{"a": 1}]}),
    ]
    assert filters_equivalent(together, apart) is None
    assert filters_equivalent(
        together, [grant(["100.64.0.9/32"], {"example.com/cap/x": [{"a": 2}, {"b": 2}]})]
    )


def test_ssh_rules_compare_in_order_with_set_principals() -> None:
    accept = {"accept": True, "allowAgentForwarding": True}
    principals = [{"nodeIP": "100.64.0.1"}, {"nodeIP": "100.64.0.2"}]
    first = {
        "principals": principals,
        "sshUsers": {"root": "root"},
        "action": accept,
    }
    check = {
        "principals": [{"nodeIP": "100.64.0.3"}],
        "sshUsers": {"root": ""},
        "action": {"holdAndDelegate": "https://a.example/machine/ssh/action/1/to/2?local_user=x"},
    }
    reordered = {**first, "principals": list(reversed(principals)), "acceptEnv": []}
    other_host = {
        **check,
        "action": {"holdAndDelegate": "https://b.example/machine/ssh/action/1/to/2?local_user=x"},
    }
    assert ssh_equivalent({"rules": [check, first]}, {"rules": [other_host, reordered]}) is None
    assert ssh_equivalent({"rules": [check, first]}, {"rules": [first, check]})
    assert ssh_equivalent(None, {"rules": []}) is None
    assert ssh_equivalent({"rules": [first]}, {"rules": [{**first, "sshUsers": {"root": ""}}]})


def test_peers_and_cap_maps() -> None:
    want = {"a": {"AllowedIPs": ["100.64.0.1/32", "10.0.0.0/8"], "PrimaryRoutes": ["10.0.0.0/8"]}}
    assert (
        peers_equivalent(
            want, {"a": {"AllowedIPs": ["10.0.0.0/8", "100.64.0.1"], "PrimaryRoutes": ["10.0.0.0/8"]}}
        )
        is None
    )
    assert peers_equivalent(want, {"a": {"AllowedIPs": ["100.64.0.1/32"], "PrimaryRoutes": []}})
    assert peers_equivalent(want, {})
    assert cap_maps_equivalent({"x": None}, {"x": [], "https://tailscale.com/cap/ssh": None}) is None
    assert cap_maps_equivalent({"x": None}, {"y": None})
