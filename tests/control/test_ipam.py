"""Address allocation on a live server: registration, exhaustion and restarts."""

from __future__ import annotations

import pytest

from pyheadscale.tailkey import NodePrivate
from tests.live_server import LiveServer, StartLive


@pytest.mark.parametrize("strategy", ["sequential", "random"])
async def test_addresses_survive_restart(start_live: StartLive, strategy: str) -> None:
    live: LiveServer = await start_live(
        prefixes={"v4": "100.64.0.0/28", "v6": "fd7a:115c:a1e0::/124", "allocation": strategy}
    )
    nodes = [await live.node(f"n{i}") for i in range(4)]
    before = {n.node_key_text: live.record(n) for n in nodes}
    held = {(b.ipv4, b.ipv6) for b in before.values()}
    assert len(held) == 4
    await live.restart()
    for key, node in before.items():
        after = live.record(key)
        assert (after.id, after.ipv4, after.ipv6) == (node.id, node.ipv4, node.ipv6)
    # new nodes after the restart never get an address someone holds
    more = [await live.node(f"m{i}") for i in range(6)]
    fresh = [live.record(n) for n in more]
    all_v4 = [n.ipv4 for n in live.store.nodes.values()]
    all_v6 = [n.ipv6 for n in live.store.nodes.values()]
    assert len(set(all_v4)) == len(all_v4) == 10 and len(set(all_v6)) == len(all_v6) == 10
    assert not {(f.ipv4, f.ipv6) for f in fresh} & held


async def test_exhaustion_is_a_clear_registration_error(start_live: StartLive) -> None:
    live: LiveServer = await start_live(prefixes={"v4": "100.64.0.0/30", "v6": None})
    key = await live.preauth_key()
    for i in range(2):
        await live.node(f"n{i}", auth_key=key)
    client = await live.client()
    status, data = await client.request(
        "POST",
        "/machine/register",
        {
            "Version": 130,
            "NodeKey": NodePrivate.generate().public().text,
            "Auth": {"AuthKey": key},
            "Hostinfo": {"Hostname": "third"},
        },
    )
    assert status == 200, data
    import json

    answer = json.loads(data)
    assert answer["MachineAuthorized"] is False
    assert "address" in answer["Error"].lower()
    assert len(live.store.nodes) == 2
    # deleting a node frees its address for the next one
    victim = next(iter(live.store.nodes.values()))
    await live.store.delete_node(victim.id)
    again = await live.node("third", auth_key=key)
    assert live.record(again).ipv4 == victim.ipv4
