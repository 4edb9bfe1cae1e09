"""The official tailscaled and tailscale CLI against pyheadscale, in a lab of namespaces behind real NATs.

One driver run (tailscaled_driver.py, under `unshare --net --mount`) builds the lab of topology.py, runs every
scenario of tailscaled_scenarios.py in order on it and reports what the clients showed; each test below
judges one scenario. The version matrix runs the join-and-talk scenarios again with the oldest and newest
pinned clients (tests/refbin.py). Skips, naming the reason, without Go (no reference binaries), without
private namespaces or without nftables.

`PYHEADSCALE_LAB_CONTROL=headscale` runs this module's lab against real Headscale v0.29.2 instead (the
driver's `--control headscale`), to see every difference raw; test_tailscaled_headscale.py is the
side-by-side run with the differences seen so far marked.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest

from tests import refbin
from tests.e2e.tailscaled_driver import (
    EXTRA_RECORD,
    INET_ADDRESS,
    ROUTER_SUBNET_ADDRESS,
    SPLIT_DNS_ANSWER,
    SPLIT_DNS_ZONE,
)
from tests.e2e.topology import run_lab_driver

HERE = Path(__file__).parent
TAILNET = ipaddress.ip_network("100.64.0.0/10")
LAB_RANGES = [
    ipaddress.ip_network(n)
    for n in (
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "100.64.0.0/10",
        "fd7a:115c:a1e0::/48",
        "127.0.0.0/8",
        "::1/128",
        "fe80::/10",
        "ff00::/8",
    )
]
"""Where a route in the lab may lead: documentation ranges, the tailnet's, loopback, link-local, multicast."""
SCENARIOS = [
    "join",
    "direct",
    "symmetric",
    "policy_deny",
    "subnet_routes",
    "exit_node",
    "magicdns",
    "network_change",
    "interactive_login",
    "tagged_key",
    "advertise_tags_at_login",
    "advertise_tags_with_key",
    "logout_relogin",
    "key_expiry",
    "ephemeral",
    "containment",
]
JOIN_AND_TALK = ["join", "direct"]

pytestmark = [pytest.mark.realclient, pytest.mark.timeout(900)]


def binaries(version: str) -> list[str]:
    """The driver's --tailscaled/--tailscale arguments for one client version (skips when unavailable)."""
    paths = []
    for command in ("tailscaled", "tailscale"):
        try:
            paths.append(str(refbin.binary(f"{command}@{version.lstrip('v')}")))
        except refbin.Unavailable as exc:
            pytest.skip(f"reference program {command}@{version} unavailable: {exc}")
    return ["--tailscaled", paths[0], "--tailscale", paths[1]]


def control_args(control: str) -> list[str]:
    """The driver's --control arguments: pyheadscale (the default), or real Headscale (skips when unbuilt)."""
    if control == "pyheadscale":
        return []
    if control != "headscale":
        raise ValueError(f"PYHEADSCALE_LAB_CONTROL must be pyheadscale or headscale, not {control!r}")
    try:
        headscale = refbin.binary("headscale")
    except refbin.Unavailable as exc:
        pytest.skip(f"reference program headscale unavailable: {exc}")
    return ["--control", "headscale", "--headscale", str(headscale)]


def drive(
    version: str, scenarios: list[str], timeout: float, control: str | None = None
) -> dict[str, dict[str, Any]]:
    """One driver run; `control` defaults to $PYHEADSCALE_LAB_CONTROL, else pyheadscale."""
    control = control or os.environ.get("PYHEADSCALE_LAB_CONTROL") or "pyheadscale"
    result = run_lab_driver(
        HERE / "tailscaled_driver.py",
        [*binaries(version), *control_args(control), "--scenarios", ",".join(scenarios)],
        timeout=timeout,
    )
    assert set(result["scenarios"]) == set(scenarios), result
    return dict(result["scenarios"], _logs=result.get("logs", {}), _stderr=result["_stderr"])


@pytest.fixture(scope="module")
def lab() -> dict[str, dict[str, Any]]:
    return drive(refbin.TAILSCALE_PINNED, SCENARIOS, timeout=840)


def evidence(results: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    found = results[name]
    assert "error" not in found, (found, results["_logs"])
    return found


def assert_joined_and_talking(results: dict[str, dict[str, Any]]) -> None:
    join = evidence(results, "join")
    for me, other in (("a", "b"), ("b", "a")):
        assert join[me]["BackendState"] == "Running", join
        assert ipaddress.ip_address(join[me]["TailscaleIPs"][0]) in TAILNET, join
        assert join[me]["TailscaleIPs"][0] == join["server"][me]["ipv4"], join
        assert join[f"{me}_peers"][other]["Online"] is True, join
        assert join[f"{me}_peers"][other]["TailscaleIPs"][0] == join["ips"][other], join
    # a real TCP connection each way over the tailnet, each side seen as its tailnet address
    assert join["b_to_a"] == {"ok": True, "seen_as": join["ips"]["b"]}, join
    assert join["a_to_b"] == {"ok": True, "seen_as": join["ips"]["a"]}, join
    direct = evidence(results, "direct")
    for pinger, target in (("b_to_a", "a"), ("a_to_b", "b")):
        ping = direct[pinger]
        assert ping["exit"] == 0 and ping["via"], ping
        path = ping["via"][-1]
        # direct, to the target's public (NAT) address, at an endpoint STUN found and pyheadscale passed on
        assert path.startswith(f"{direct['wan'][target]}:"), ping
        assert path in direct["endpoints"][target], (path, direct["endpoints"])
        assert path in direct["netmap_endpoints"][target], (path, direct["netmap_endpoints"])
    assert direct["b_peer_a"]["CurAddr"] == direct["b_to_a"]["via"][-1], direct
    assert direct["traffic"]["ok"], direct


def test_join_with_authkey_and_talk(lab: dict[str, dict[str, Any]]) -> None:
    """`tailscale up --login-server --authkey` on two nodes behind easy NATs; they talk, directly."""
    assert_joined_and_talking(lab)


def test_symmetric_nats_fall_back_to_derp(lab: dict[str, dict[str, Any]]) -> None:
    found = evidence(lab, "symmetric")
    ping = found["ping"]
    assert ping["via"] and all(via.startswith("DERP(") for via in ping["via"]), ping
    assert "direct connection not established" in ping["output"], ping
    assert found["c_peer_d"]["CurAddr"] == "" and found["c_peer_d"]["Relay"], found
    assert found["traffic"]["ok"], found  # and still a real connection goes through
    assert found["derp"]["packets_received"] > 0 and found["derp"]["packets_sent"] > 0, found


def test_policy_deny_is_enforced_by_the_client(lab: dict[str, dict[str, Any]]) -> None:
    found = evidence(lab, "policy_deny")
    assert found["allowed"]["ok"], found
    assert not found["denied"]["ok"] and "timed out" in found["denied"]["seen_as"], found
    assert found["lan"]["ok"], found  # the denied port does answer off the tailnet
    assert found["filter_drops"], found  # a's tailscaled logged dropping the packets


def test_subnet_routes_approval_autoapprovers_and_accept_routes(lab: dict[str, dict[str, Any]]) -> None:
    found = evidence(lab, "subnet_routes")
    assert not found["before_accept"]["ok"], found
    assert sorted(found["announced"]) == ["203.0.113.0/25", "203.0.113.128/25"], found
    assert found["approved_by_policy"] == ["203.0.113.128/25"], found
    # the auto-approved half is reachable through a (SNAT: the host sees the router's LAN address) ...
    assert found["auto_approved"] == {"ok": True, "seen_as": ROUTER_SUBNET_ADDRESS}, found
    assert found["b_peer_a_before"]["PrimaryRoutes"] == ["203.0.113.128/25"], found
    # ... the other only once `pyheadscale nodes approve-routes` approved it
    assert not found["unapproved"]["ok"], found
    assert found["cli"][0] == 0, found
    assert found["cli_approved"] == {"ok": True, "seen_as": ROUTER_SUBNET_ADDRESS}, found
    assert sorted(found["b_peer_a_after"]["PrimaryRoutes"]) == ["203.0.113.0/25", "203.0.113.128/25"], found
    assert not found["after_unaccept"]["ok"], found  # --accept-routes=false takes them away again


def test_exit_node(lab: dict[str, dict[str, Any]]) -> None:
    found = evidence(lab, "exit_node")
    wan = found["wan"]
    assert found["before"] == {"ok": True, "seen_as": wan["b"]}, found
    assert {"0.0.0.0/0", "::/0"} <= set(found["approved"]), found  # autoApprovers.exitNode
    assert found["b_peer_a"]["ExitNode"] is True and found["b_peer_a"]["ExitNodeOption"] is True, found
    assert found["exit_node_status"]["Online"] is True, found
    assert found["via_exit"] == {"ok": True, "seen_as": wan["a"]}, found  # the internet host sees a's NAT
    assert found["after"] == {"ok": True, "seen_as": wan["b"]}, found


def test_magicdns_split_dns_and_extra_records(lab: dict[str, dict[str, Any]]) -> None:
    found = evidence(lab, "magicdns")
    assert found["peer"] == {"rcode": "NOERROR", "answers": [found["a_ip"]]}, found
    assert found["extra"] == {"rcode": "NOERROR", "answers": [EXTRA_RECORD[1]]}, found
    assert found["split"] == {"rcode": "NOERROR", "answers": [SPLIT_DNS_ANSWER]}, found
    assert SPLIT_DNS_ZONE in found["dns_status"] and INET_ADDRESS in found["dns_status"], found


def test_network_change_reaches_peers(lab: dict[str, dict[str, Any]]) -> None:
    found = evidence(lab, "network_change")
    assert found["new_wan"] != found["old_wan"], found
    assert found["server_learnt"], found  # b's new STUN endpoint reached pyheadscale
    ping = found["ping"]
    assert ping["exit"] == 0 and ping["via"][-1].startswith(f"{found['new_wan']}:"), ping
    assert ping["via"][-1] in found["server_endpoints"], found
    assert ping["via"][-1] in found["a_netmap_b_endpoints"], found  # passed on to a by pyheadscale
    assert found["traffic"]["ok"], found


def test_interactive_login_approved_by_cli(lab: dict[str, dict[str, Any]]) -> None:
    found = evidence(lab, "interactive_login")
    assert found["before"]["BackendState"] == "NeedsLogin", found
    login = found["login"]
    assert "/register/" in login["url"] and login["cli"][0] == 0, login
    assert login["up_exit"] == 0 and "Success." in login["up_output"], login
    assert found["after"]["BackendState"] == "Running", found
    assert found["server"]["user_id"] is not None, found
    assert found["a_peer_f"]["Online"] is True, found
    assert found["traffic"]["ok"], found


def test_tagged_key_makes_a_tagged_node(lab: dict[str, dict[str, Any]]) -> None:
    found = evidence(lab, "tagged_key")
    assert found["self"]["BackendState"] == "Running" and found["self"]["Tags"] == ["tag:server"], found
    assert found["a_peer_g"]["Tags"] == ["tag:server"], found
    assert found["server"] == {"tags": ["tag:server"], "user_id": None}, found


def test_advertise_tags_at_interactive_login(lab: dict[str, dict[str, Any]]) -> None:
    found = evidence(lab, "advertise_tags_at_login")
    assert found["login"]["up_exit"] == 0, found
    assert found["self"]["Tags"] == ["tag:server"], found
    assert found["server"] == {"tags": ["tag:server"], "user_id": None}, found


def test_advertise_tags_with_a_user_key_is_refused(lab: dict[str, dict[str, Any]]) -> None:
    """As Headscale v0.29: the key decides a new node's tags, so `tailscale up` fails naming the tags."""
    found = evidence(lab, "advertise_tags_with_key")
    assert found["up_exit"] != 0, found
    assert "requested tags [tag:server] are invalid or not permitted" in found["up_output"], found
    assert found["server"] is None, found


def test_logout_and_relogin(lab: dict[str, dict[str, Any]]) -> None:
    found = evidence(lab, "logout_relogin")
    assert found["after_logout"]["BackendState"] == "NeedsLogin", found
    assert found["server_after_logout"] == {"exists": True, "expired": True}, found
    peer = found["c_peer_d_after_logout"]
    assert peer is None or peer["Expired"] is True, found
    assert found["relogin"]["BackendState"] == "Running", found
    assert found["node_id"]["before"] == found["node_id"]["after"], found  # same node, same addresses
    assert found["c_peer_d_after_relogin"]["Online"] is True, found
    assert found["c_peer_d_after_relogin"]["Relay"], found  # d's home DERP is known again
    assert found["traffic"]["ok"], found


def test_node_key_expiry_seen_by_the_client(lab: dict[str, dict[str, Any]]) -> None:
    found = evidence(lab, "key_expiry")
    assert found["cli"][0] == 0, found
    assert found["own"]["Expired"] is True and found["own"]["BackendState"] == "NeedsLogin", found
    peer = found["d_peer_c"]
    assert peer is None or peer["Expired"] is True, found
    assert not found["traffic"]["ok"], found


def test_ephemeral_node_is_cleaned_up(lab: dict[str, dict[str, Any]]) -> None:
    found = evidence(lab, "ephemeral")
    assert found["server"] == {"ephemeral": True} and found["a_saw_e"], found
    assert found["deleted"], found
    assert "e" not in found["a_peers_after"], found


def in_lab(address: str) -> bool:
    network = ipaddress.ip_network(address, strict=False)
    return any(network.version == r.version and network.subnet_of(r) for r in LAB_RANGES)  # type: ignore[arg-type]


def test_nothing_can_leave_the_lab(lab: dict[str, dict[str, Any]]) -> None:
    """No namespace, the control host included, has a route to anything outside the lab's ranges."""
    found = evidence(lab, "containment")
    assert {"control", "a", "b", "inet", "nat-a", "lanhost"} <= set(found["routes"]), found
    for host, routes in found["routes"].items():
        for route in routes:
            if route.get("type") in ("unreachable", "blackhole", "prohibit", "throw"):
                continue
            if route["dst"] == "default":
                # through a lab router, or into the tailnet (an exit node)
                assert route.get("dev") == "tailscale0" or in_lab(route["gateway"]), (host, route)
                assert host != "control" and not host.startswith("nat-"), (host, route)
            else:
                assert in_lab(route["dst"]), (host, route)


@pytest.mark.parametrize(
    "version", [refbin.TAILSCALE_OLDEST, refbin.TAILSCALE_PINNED, refbin.TAILSCALE_NEWEST]
)
def test_client_versions_join_and_talk(version: str, request: pytest.FixtureRequest) -> None:
    """Every pinned client version, oldest Headscale supports to newest stable, joins and goes direct."""
    if version == refbin.TAILSCALE_PINNED:
        results = request.getfixturevalue("lab")  # the shared lab already ran it with this version
    else:
        results = drive(version, JOIN_AND_TALK, timeout=300)
    assert_joined_and_talking(results)
