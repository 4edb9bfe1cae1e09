"""Switching from Headscale: real Headscale v0.29.2 registers real clients (two tsnet nodes, one tagged, and
a tailscaled serving a subnet route), then pyheadscale takes over its config, database and noise key, and the
clients carry on with no new login (see headscale_takeover_driver.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.db.pgserver import unavailable as postgres_unavailable
from tests.e2e.netns import run_driver

HERE = Path(__file__).parent

pytestmark = pytest.mark.realclient


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_clients_of_headscale_carry_on_under_pyheadscale(
    db: str, reference_binary: Callable[[str], Path]
) -> None:
    if db == "postgres" and postgres_unavailable():
        pytest.skip(str(postgres_unavailable()))
    headscale = reference_binary("headscale")
    tailscale = [str(reference_binary("tailscaled")), str(reference_binary("tailscale"))]
    result = run_driver(
        HERE / "headscale_takeover_driver.py",
        ["--headscale", str(headscale), "--db", db, "--tailscale", *tailscale],
        timeout=900,
    )
    assert result["ok"], result
    # Keys as Headscale v0.29.2 makes them: the bcrypt-hashed `hskey-` forms.
    assert result["key_forms"] == ["hskey-auth-", "hskey-api-"], result
    assert result["before"] == 200, result
    assert result["takeover_logged"], result
    assert result["backup"] == (["v0.29.1-v0.29.2"] if db == "sqlite" else "schema"), result
    # The Headscale-made API key reads the REST API, and every node is as Headscale left it.
    assert result["api_status"] == 200, result
    nodes = result["headscale_nodes"]
    assert set(nodes) == {"nodea", "nodeb", "nodet"}, result
    assert nodes["nodeb"]["tags"] == ["tag:server"] and nodes["nodeb"]["approved_routes"] == ["10.99.0.0/24"]
    # tailscaled announces a subnet route Headscale approved: it serves it, before and after.
    assert nodes["nodet"]["serving_routes"] == ["10.98.0.0/24"], result
    assert result["nodet_ping_before"], result
    assert result["after_nodes_same"], result
    assert result["policy_carried_over"], result  # the database-mode policy set with `headscale policy set`
    # Both clients came back to the new server on their own, and reach each other.
    assert result["online_after"] == {"nodea": True, "nodeb": True, "nodet": True}, result
    assert result["after"]["status"] == 200, result
    assert result["nodet_ping_after"], result
    # Headscale's reusable preauth key registers a new client under pyheadscale.
    assert result["nodec_joined"] and result["node_count"] == len(nodes) + 1, result
