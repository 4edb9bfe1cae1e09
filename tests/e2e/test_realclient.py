"""End to end with real Tailscale clients (tsnet in Caddy), each scenario in its own private namespace."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.netns import run_driver

HERE = Path(__file__).parent

pytestmark = pytest.mark.realclient


def test_two_tsnet_nodes_exchange_http_over_the_tailnet() -> None:
    result = run_driver(HERE / "twonode_driver.py", [], timeout=400)
    assert result.get("registered"), result
    assert result["ok"], result
    assert result["status"] == 200
