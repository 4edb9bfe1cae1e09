"""Real tsnet clients through a real OpenID provider: an allowed user's node joins once they confirm it on
pyheadscale's confirmation page, an outsider is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.netns import run_driver
from tests.oidc.conftest import install_provider

HERE = Path(__file__).parent

pytestmark = pytest.mark.realclient


def test_tsnet_node_joins_through_oidc_and_an_outside_domain_is_refused() -> None:
    install_provider()
    result = run_driver(HERE / "oidc_driver.py", [], timeout=300)
    assert result["ok"], result
    assert result["confirmation_page"] == {
        "status": 200,
        "names_machine": True,
        "names_account": True,
        "registered_before_confirming": False,
    }, result
    assert result["alice_page"] == {"status": 200, "success": True, "via_provider": True}, result
    assert result["a"] == {"online": True, "method": "oidc", "owner_email": "alice@example.com"}, result
    assert result["bob_page"] == {"status": 403, "says_why": True}, result
    assert not result["c_registered"], "a refused login registers nothing"
    assert result["fetch_from_a"] == 200, "the OIDC-registered node is really on the tailnet"
