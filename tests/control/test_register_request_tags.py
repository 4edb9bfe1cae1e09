"""`tailscale up --authkey K --advertise-tags T` (Hostinfo.RequestTags with a preauth key) for a new node.

Headscale v0.29 refuses it, whatever the key: a node joining with a preauth key takes its tags from the key
(hscontrol/state/state.go). pyheadscale used to ignore the tags and register the node untagged, which the
official client showed in the namespace lab (tests/e2e/test_tailscaled.py).
"""

from __future__ import annotations

import pytest

from tailkey import NodePrivate
from tests.control.conftest import Harness

HOSTINFO = {"Hostname": "tagme", "OS": "linux", "RequestTags": ["tag:server"]}


@pytest.mark.parametrize("tagged_key", [False, True])
async def test_request_tags_with_a_preauth_key_are_refused(harness: Harness, tagged_key: bool) -> None:
    key = await harness.preauth_key(tags=["tag:server"] if tagged_key else [])
    client = await harness.client()
    answer = await client.register(NodePrivate.generate(), auth_key=key, hostinfo=HOSTINFO)
    assert answer["MachineAuthorized"] is False
    assert "requested tags [tag:server] are invalid or not permitted" in answer["Error"]
    assert not harness.store.nodes


async def test_the_same_key_without_request_tags_registers(harness: Harness) -> None:
    key = await harness.preauth_key(tags=["tag:server"])
    client = await harness.client()
    hostinfo = {k: v for k, v in HOSTINFO.items() if k != "RequestTags"}
    answer = await client.register(NodePrivate.generate(), auth_key=key, hostinfo=hostinfo)
    assert answer["MachineAuthorized"] is True and answer["Error"] == ""
    [node] = harness.store.nodes.values()
    assert node.tags == ["tag:server"]
