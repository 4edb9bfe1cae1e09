"""autoApprovers on a running tailnet: a connected node that starts announcing routes has those the policy
covers approved at once (kept over a restart), and its peers get them; the others wait for an operator."""

from __future__ import annotations

import json
from typing import Any

from tests.live_server import ClientNode, LiveServer, StartLive, open_map

COVERED = "192.0.2.0/24"
UNCOVERED = "198.51.100.0/24"
POLICY = {
    "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
    "autoApprovers": {"routes": {COVERED: ["alice@"]}},
}


async def announce(node: ClientNode, routes: list[str]) -> None:
    """A map update from `node`'s client whose Hostinfo announces `routes`, as `tailscale set
    --advertise-routes` sends on a node already connected."""
    status, body = await node.client.request(
        "POST",
        "/machine/map",
        {
            "Version": node.client.capver,
            "NodeKey": node.node_key_text,
            "Stream": False,
            "OmitPeers": True,
            "Hostinfo": {"Hostname": "router", "OS": "linux", "RoutableIPs": routes},
        },
    )
    assert status == 200, body


async def node_routes(live: LiveServer, node_id: int) -> tuple[list[str], list[str]]:
    """(availableRoutes, approvedRoutes) as the REST API reports them."""
    status, body = await live.local_api("GET", f"/node/{node_id}")
    assert status == 200, body
    return body["node"]["availableRoutes"], body["node"]["approvedRoutes"]


async def test_routes_announced_by_a_connected_node_are_auto_approved_and_reach_peers(
    start_live: StartLive,
) -> None:
    live = await start_live(policy={"mode": "database"})
    status, body = await live.local_api("PUT", "/policy", {"policy": json.dumps(POLICY)})
    assert status == 200, body
    router, peer = await live.node("router"), await live.node("peer")
    router_id = live.record(router).id
    rr, rp = open_map(router), open_map(peer)
    try:
        await rr.next()
        first = await rp.next()
        assert [p["PrimaryRoutes"] for p in first["Peers"] if p["ID"] == router_id] == [[]]

        await announce(router, [COVERED, UNCOVERED])

        def router_serves_covered(message: dict[str, Any]) -> bool:
            return any(
                p["ID"] == router_id and COVERED in p["PrimaryRoutes"]
                for p in message.get("PeersChanged", [])
            )

        got = await rp.wait_for(router_serves_covered, 10)
        entry = next(p for p in got["PeersChanged"] if p["ID"] == router_id)
        assert COVERED in entry["AllowedIPs"]
        assert UNCOVERED not in entry["AllowedIPs"] and UNCOVERED not in entry["PrimaryRoutes"]
    finally:
        await rr.close()
        await rp.close()
    available, approved = await node_routes(live, router_id)
    assert sorted(available) == sorted([COVERED, UNCOVERED])
    assert approved == [COVERED], "only the route autoApprovers cover is approved"
    await live.restart()
    assert (await node_routes(live, router_id))[1] == [COVERED], "the approval was stored"
