"""A node's NetInfo (its home DERP) survives Hostinfo updates that carry none.

tailscaled sends NetInfo only when its netcheck result changes. After `tailscale logout` and a new login the
re-registration and every map request that follows come without it: found by the official client in the
namespace lab (tests/e2e/test_tailscaled.py, logout and re-login), where peers then saw the node with no
home DERP and could not reach it behind a symmetric NAT.
"""

from __future__ import annotations

from typing import Any

from pyheadscale.tailkey import NodePrivate
from tests.live_server import LiveServer, MapReader

HOSTINFO = {"Hostname": "roamer", "OS": "linux", "GoArch": "amd64"}


async def lite_update(live: LiveServer, node: Any, node_key_text: str, hostinfo: dict[str, Any]) -> None:
    status, data = await node.client.request(
        "POST",
        "/machine/map",
        {"Version": 130, "NodeKey": node_key_text, "OmitPeers": True, "Stream": False, "Hostinfo": hostinfo},
    )
    assert status == 200, data


async def test_netinfo_survives_a_map_request_and_a_relogin_without_it(live: LiveServer) -> None:
    key = await live.preauth_key()
    roamer = await live.node("roamer", auth_key=key)
    await lite_update(live, roamer, roamer.node_key_text, {**HOSTINFO, "NetInfo": {"PreferredDERP": 7}})
    node = live.record(roamer)
    assert node is not None and node.home_derp == 7

    await lite_update(live, roamer, roamer.node_key_text, {**HOSTINFO, "OSVersion": "6.1"})
    node = live.record(roamer)
    assert node is not None and node.home_derp == 7 and node.hostinfo["OSVersion"] == "6.1"

    # logout, then a login with a new node key: the client's Hostinfo has no NetInfo this time
    await roamer.client.register(roamer.node_key, hostinfo=HOSTINFO, expiry="1970-01-01T00:02:03Z")
    new_key = NodePrivate.generate()
    answer = await roamer.client.register(new_key, auth_key=key, hostinfo=HOSTINFO)
    assert answer["MachineAuthorized"], answer
    new_text = new_key.public().text
    await lite_update(live, roamer, new_text, HOSTINFO)
    node = live.record(new_text)
    assert node is not None and node.home_derp == 7

    watcher = await live.node("watcher", auth_key=key)
    reader = MapReader(watcher.client.map_stream(watcher.node_key))
    try:
        first = await reader.next()
    finally:
        await reader.close()
    [peer] = [p for p in first["Peers"] if p["Key"] == new_text]
    assert peer["HomeDERP"] == 7
