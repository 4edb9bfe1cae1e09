"""Config keys that show in every node's own map, as Headscale sends them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.control.conftest import Harness, open_map


@pytest.mark.parametrize("enabled", [False, True])
async def test_auto_update_default_is_a_self_capability(make_harness: Any, enabled: bool) -> None:
    harness: Harness = await make_harness(auto_update={"enabled": enabled})
    node = await harness.node("alpha")
    reader = open_map(node, compress=False)
    try:
        full = await reader.next()
    finally:
        await reader.close()
    assert full["Node"]["CapMap"]["default-auto-update"] == [enabled]
    assert all("default-auto-update" not in (p.get("CapMap") or {}) for p in full.get("Peers", []))
