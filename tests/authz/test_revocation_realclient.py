"""Revocation seen by real Tailscale clients (tsnet v1.90.9 in Caddy), in a private network namespace."""

from __future__ import annotations

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
