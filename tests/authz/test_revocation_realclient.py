"""Revocation seen by real Tailscale clients (tsnet v1.90.9 in Caddy), in a private network namespace."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.netns import run_driver

pytestmark = pytest.mark.realclient


def test_expired_node_loses_its_stream_its_relay_and_its_peer() -> None:
    result = run_driver(Path(__file__).parent / "revoke_driver.py", [], timeout=180)
    assert result["ok"], result
    assert result["fetched_before"] and result["b_on_relay_before"] and result["b_online_before"], result
    assert result["b_stream_closed"] and result["b_relay_closed"], result
    assert result["b_came_back"] == [], result
    assert result["fetched_after"] is False, result
    assert result["b_record_unchanged"], result
    # Measured, not asserted.
    print(
        f"real client: map stream closed {result['stream_closed_after_s']} s and relay connection closed "
        f"{result['relay_closed_after_s']} s after the expiry"
    )


def test_tailscale_logout_takes_the_stream_and_the_relay(reference_binary: Callable[[str], Path]) -> None:
    """A real `tailscale logout` (tailscaled v1.90.9) expires the node, and nothing of it comes back.

    tailscaled hangs up its own stream and relay connection on logout, so this passed before the revocation
    fixes too: it checks that the real logout request is understood, not the server-side cut-off (the tsnet
    test above and tests/authz/test_revocation.py do that).
    """
    tailscaled, tailscale = reference_binary("tailscaled"), reference_binary("tailscale")
    driver = Path(__file__).parent / "logout_driver.py"
    result = run_driver(driver, [str(tailscaled), str(tailscale)], timeout=180)
    assert result["ok"], result
    assert result["online_before"] and result["on_relay_before"], result
    assert result["logout"]["code"] == 0, result
    assert result["expired"] and result["stream_closed"] and result["relay_closed"], result
    assert result["came_back"] == [], result
    assert result["backend_state"] == "NeedsLogin", result
    print(f"tailscale logout: stream and relay connection closed within {result['closed_after_s']} s")


def test_tailscales_derper_admits_through_verify_only_current_nodes(
    reference_binary: Callable[[str], Path],
) -> None:
    """Go's derper (v1.90.9) with `--verify-client-url` pointed at pyheadscale: expired, deleted and unknown
    node keys are refused at connect time, a current one is admitted. (That derper asks only then;
    re-verification of connected clients is pyheadscale-derper's.)"""
    derper = reference_binary("derper")
    result = run_driver(Path(__file__).parent / "derper_driver.py", [str(derper)], timeout=120)
    assert result["ok"], result
    assert result["admitted"] == {"current": True, "expired": False, "deleted": False, "unknown": False}, (
        result
    )
