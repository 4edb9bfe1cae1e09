"""End to end with real Tailscale clients (tsnet in Caddy), each scenario in its own private namespace.

Node B fetches a file from node A (see twonode_driver.py). The file outweighs everything else the nodes send,
so a relay's byte counters tell whether the exchange went through it: with TS_DEBUG_ALWAYS_USE_DERP it must,
without it the nodes find each other's UDP endpoints through STUN and the relay only sees disco messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.netns import run_driver

HERE = Path(__file__).parent
EMBEDDED_REGION, MAP_FILE_REGION, PINNED_REGION = 999, 900, 999

pytestmark = pytest.mark.realclient


def run(relay: str, *, always_derp: bool) -> dict[str, Any]:
    """Run one scenario and check what every scenario must show: both nodes joined and the file arrived."""
    args = ["--relay", relay, *(["--always-derp"] if always_derp else [])]
    result = run_driver(HERE / "twonode_driver.py", args, timeout=150)
    assert result.get("registered"), result
    assert result["ok"], result
    assert all(node["online"] for node in result["nodes"].values()), result["nodes"]
    # Counters for every relay of the scenario (the embedded one is captured as pyheadscale mounts it).
    assert result["relays"] and None not in result["relays"].values(), result["relays"]
    return result


def assert_relayed_everything(result: dict[str, Any], relay: str, home_region: int) -> None:
    """UDP was off in both nodes, so the file can only have crossed `relay`."""
    for name, evidence in result["evidence"].items():
        assert evidence["udp_disabled"], (name, evidence)
        assert " udp=false " in evidence["netcheck"], (name, evidence)
    for name, node in result["nodes"].items():
        assert node["derp"] == home_region, (name, node)
    stats = result["relays"][relay]
    assert stats["bytes_received"] >= result["received"], stats
    assert stats["bytes_sent"] >= result["received"], stats


@pytest.mark.parametrize(
    ("relay", "home_region"), [("embedded", EMBEDDED_REGION), ("standalone", MAP_FILE_REGION)]
)
def test_stun_finds_endpoints_and_the_file_goes_direct(relay: str, home_region: int) -> None:
    """netcheck reaches our STUN server (udp=true), the endpoints reach the store, and the peers go direct."""
    result = run(relay, always_derp=False)
    for name, evidence in result["evidence"].items():
        assert evidence["netcheck"] is not None and " udp=true " in evidence["netcheck"], (name, evidence)
        assert not evidence["udp_disabled"], (name, evidence)
    for name, node in result["nodes"].items():
        assert node["endpoints"], (name, node)
        assert node["derp"] == home_region, (name, node)
    [stats] = result["relays"].values()
    assert stats["packets_received"] > 0, stats  # disco pings and call-me-maybes go through the home relay
    assert stats["bytes_sent"] < result["received"], stats


def test_always_derp_through_the_embedded_relay() -> None:
    assert_relayed_everything(run("embedded", always_derp=True), "embedded", EMBEDDED_REGION)


def test_always_derp_through_a_standalone_relay_from_derp_paths() -> None:
    assert_relayed_everything(run("standalone", always_derp=True), "relay", MAP_FILE_REGION)


def test_always_derp_across_two_meshed_relays() -> None:
    """A is on relay1 and B on relay2: every packet between them crosses the mesh link, in both directions."""
    result = run("mesh", always_derp=True)
    for name, evidence in result["evidence"].items():
        assert evidence["udp_disabled"], (name, evidence)
    for name, node in result["nodes"].items():
        assert node["derp"] == PINNED_REGION, (name, node)
    relay1, relay2 = result["relays"]["relay1"], result["relays"]["relay2"]
    for stats in (relay1, relay2):
        assert stats["packets_forwarded_in"] > 0 and stats["packets_forwarded_out"] > 0, stats
    # A's response enters at relay1 (A's relay), crosses the mesh, and leaves relay2 towards B.
    assert relay1["bytes_received"] >= result["received"], relay1
    assert relay2["bytes_sent"] >= result["received"], relay2
