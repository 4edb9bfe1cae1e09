"""Taildrop: the file-sharing capability a node's own map carries while `taildrop.enabled` is on."""

from __future__ import annotations

from typing import Any

import pytest

from pyheadscale.config import ConfigError, build_config
from pyheadscale.mapper.builder import FILE_SHARING_CAP
from tests.live_server import LiveServer, StartLive, open_map


async def self_cap_map(live: LiveServer) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    a = await live.node("a")
    await live.node("b")
    reader = open_map(a)
    try:
        full = await reader.next()
    finally:
        await reader.close()
    return full["Node"]["CapMap"], full["Peers"]


async def test_self_node_carries_file_sharing_by_default(start_live: StartLive) -> None:
    cap_map, peers = await self_cap_map(await start_live())
    assert cap_map[FILE_SHARING_CAP] == []
    # Peers never carry it: the client decides a file target by owner or by the peer capability.
    assert all(FILE_SHARING_CAP not in p["CapMap"] for p in peers)


async def test_taildrop_disabled_withholds_the_capability(start_live: StartLive) -> None:
    cap_map, _ = await self_cap_map(await start_live(taildrop={"enabled": False}))
    assert FILE_SHARING_CAP not in cap_map
    assert "https://tailscale.com/cap/ssh" in cap_map


def test_taildrop_enabled_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match=r"taildrop\.enabled"):
        build_config({"taildrop": {"enabled": "sometimes"}})
