"""The tailscaled lab's scenarios side by side: the same lab and clients against real Headscale v0.29.2.

One driver run with `--control headscale` (tailscaled_driver.py, headscale_control.py): Headscale runs on the
control host with the config an operator would write for the lab, its own CLI makes the users and keys and
does the approvals, and every scenario of test_tailscaled.py runs unchanged. Each test here judges its
scenario with the very assertions test_tailscaled.py applies to pyheadscale; where Headscale behaves
otherwise the test is a strict xfail whose reason is the difference seen. The differences that are on purpose
are listed in the README ("Differences from Headscale, seen side by side").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import refbin
from tests.e2e import test_tailscaled as same
from tests.e2e.headscale_control import write_headscale_config

pytestmark = [pytest.mark.realclient, pytest.mark.timeout(900)]

Lab = dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def lab() -> Lab:
    return same.drive(refbin.TAILSCALE_PINNED, same.SCENARIOS, timeout=840, control="headscale")


def test_headscale_config_stays_inside_the_lab(tmp_path: Path) -> None:
    """Headscale's lab config names no public DERP map, sends no logs and checks no updates."""
    path = write_headscale_config(
        tmp_path,
        server_url="http://198.51.100.1:8080",
        listen_addr="198.51.100.1:8080",
        control_address="198.51.100.1",
        policy=tmp_path / "policy.json",
        dns={},
        ephemeral_timeout="66s",
    )
    config = yaml.safe_load(path.read_text())
    assert config["derp"]["urls"] == [] and config["derp"]["paths"] == [], config["derp"]
    assert config["derp"]["server"]["enabled"] is True, config["derp"]
    assert config["derp"]["server"]["stun_listen_addr"] == "198.51.100.1:3478", config["derp"]
    assert config["derp"]["auto_update_enabled"] is False, config["derp"]
    assert config["logtail"] == {"enabled": False} and config["disable_check_updates"] is True, config


def test_join_with_authkey_and_talk(lab: Lab) -> None:
    same.test_join_with_authkey_and_talk(lab)


def test_symmetric_nats_fall_back_to_derp(lab: Lab) -> None:
    """As for pyheadscale, but for the relay's own packet counters: Headscale publishes none."""
    found = same.evidence(lab, "symmetric")
    assert found["derp"] == {"unavailable": "Headscale v0.29.2 publishes no DERP relay counters"}, found
    ping = found["ping"]
    assert ping["via"] and all(via.startswith("DERP(") for via in ping["via"]), ping
    assert "direct connection not established" in ping["output"], ping
    assert found["c_peer_d"]["CurAddr"] == "" and found["c_peer_d"]["Relay"], found
    assert found["traffic"]["ok"], found


def test_policy_deny_is_enforced_by_the_client(lab: Lab) -> None:
    same.test_policy_deny_is_enforced_by_the_client(lab)


def test_subnet_routes_approval_autoapprovers_and_accept_routes(lab: Lab) -> None:
    same.test_subnet_routes_approval_autoapprovers_and_accept_routes(lab)


def test_exit_node(lab: Lab) -> None:
    same.test_exit_node(lab)


def test_magicdns_split_dns_and_extra_records(lab: Lab) -> None:
    same.test_magicdns_split_dns_and_extra_records(lab)


def test_network_change_reaches_peers(lab: Lab) -> None:
    same.test_network_change_reaches_peers(lab)


@pytest.mark.xfail(
    strict=False,
    reason="racy with Headscale: right after `auth register`, a first lists the new node f with Online false "
    "(two runs of three; the third saw it online), where with pyheadscale a lists it online from the first "
    "sight; not strict, since a strict mark would fail the runs that happen to see it online",
)
def test_interactive_login_approved_by_cli(lab: Lab) -> None:
    same.test_interactive_login_approved_by_cli(lab)


def test_tagged_key_makes_a_tagged_node(lab: Lab) -> None:
    same.test_tagged_key_makes_a_tagged_node(lab)


def test_advertise_tags_at_interactive_login(lab: Lab) -> None:
    same.test_advertise_tags_at_interactive_login(lab)


def test_advertise_tags_with_a_user_key_is_refused(lab: Lab) -> None:
    same.test_advertise_tags_with_a_user_key_is_refused(lab)


def test_logout_and_relogin(lab: Lab) -> None:
    same.test_logout_and_relogin(lab)


def test_node_key_expiry_seen_by_the_client(lab: Lab) -> None:
    same.test_node_key_expiry_seen_by_the_client(lab)


@pytest.mark.xfail(
    strict=True,
    reason="Headscale refuses node.ephemeral.inactivity_timeout below 1m5s (the lab gives pyheadscale 5s, "
    "Headscale 66s), so 60 s after the ephemeral node went offline it is still there and its peers still "
    "list it",
)
def test_ephemeral_node_is_cleaned_up(lab: Lab) -> None:
    same.test_ephemeral_node_is_cleaned_up(lab)


def test_nothing_can_leave_the_lab(lab: Lab) -> None:
    same.test_nothing_can_leave_the_lab(lab)


@pytest.mark.parametrize("version", [refbin.TAILSCALE_OLDEST, refbin.TAILSCALE_NEWEST])
def test_client_versions_join_and_talk(version: str) -> None:
    """The oldest and newest pinned clients join Headscale and go direct, as they do with pyheadscale."""
    same.assert_joined_and_talking(same.drive(version, same.JOIN_AND_TALK, timeout=300, control="headscale"))
