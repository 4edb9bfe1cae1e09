"""`tailscale up --authkey K --advertise-tags T` (Hostinfo.RequestTags with a preauth key) for a new node.

Headscale v0.29 refuses it, whatever the key: a node joining with a preauth key takes its tags from the key
(hscontrol/state/state.go). pyheadscale used to ignore the tags and register the node untagged, which the
official client showed in the namespace lab (tests/e2e/test_tailscaled.py).
"""

from __future__ import annotations

import pytest

from pyheadscale.tailkey import NodePrivate
from tests.live_server import LiveServer

HOSTINFO = {"Hostname": "tagme", "OS": "linux", "RequestTags": ["tag:server"]}


@pytest.mark.parametrize("tagged_key", [False, True])
async def test_request_tags_with_a_preauth_key_are_refused(live: LiveServer, tagged_key: bool) -> None:
    key = await live.preauth_key(tags=["tag:server"] if tagged_key else [])
    client = await live.client()
    answer = await client.register(NodePrivate.generate(), auth_key=key, hostinfo=HOSTINFO)
    assert answer["MachineAuthorized"] is False
    assert "requested tags [tag:server] are invalid or not permitted" in answer["Error"]
    assert not live.store.nodes


async def test_the_same_key_without_request_tags_registers(live: LiveServer) -> None:
    key = await live.preauth_key(tags=["tag:server"])
    client = await live.client()
    hostinfo = {k: v for k, v in HOSTINFO.items() if k != "RequestTags"}
    answer = await client.register(NodePrivate.generate(), auth_key=key, hostinfo=hostinfo)
    assert answer["MachineAuthorized"] is True and answer["Error"] == ""
    [node] = live.store.nodes.values()
    assert node.tags == ["tag:server"]
