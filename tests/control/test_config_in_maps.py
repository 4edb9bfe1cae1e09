"""Config keys that show in every node's own map, as Headscale sends them."""

from __future__ import annotations

import pytest

from tests.live_server import LiveServer, StartLive, open_map


@pytest.mark.parametrize("enabled", [False, True])
async def test_auto_update_default_is_a_self_capability(start_live: StartLive, enabled: bool) -> None:
    live: LiveServer = await start_live(auto_update={"enabled": enabled})
    node = await live.node("alpha")
    reader = open_map(node, compress=False)
    try:
        full = await reader.next()
    finally:
        await reader.close()
    assert full["Node"]["CapMap"]["default-auto-update"] == [enabled]
    assert all("default-auto-update" not in (p.get("CapMap") or {}) for p in full.get("Peers", []))
