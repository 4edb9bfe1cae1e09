"""Tags at interactive login: `tailscale up --advertise-tags` without an auth key makes a tagged node when the
approving user owns every tag (tagOwners), and is refused, naming the tags, otherwise."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from pyheadscale.client.control import ControlClient
from pyheadscale.tailkey import NodePrivate
from tests.control.conftest import Harness

POLICY = {
    "groups": {"group:ops": ["bob@"]},
    "tagOwners": {"tag:web": ["alice@"], "tag:db": ["group:ops"]},
    "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
}


async def api(harness: Harness, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    _, secret = await harness.store.create_api_key(None)
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {secret}"}) as http,
        http.post(f"{harness.url}/api/v1{path}", json=body) as resp,
    ):
        return resp.status, await resp.json()


async def login(
    harness: Harness, tags: Any, user: str, *, hostname: str = "web1", policy: bool = True
) -> tuple[ControlClient, dict[str, Any], tuple[int, dict[str, Any]]]:
    """A keyless login asking for `tags`, approved for `user` by `auth register`; the client's answer."""
    for name in ("alice", "bob", "carol"):
        if harness.store.user_by_name(name) is None:
            await harness.store.create_user(name)
    assert harness.server.policy is not None
    if policy and harness.server.policy.text is None:
        await harness.server.policy.apply(json.dumps(POLICY))
    client = await harness.client()
    node_key = NodePrivate.generate()
    info = {"Hostname": hostname, "OS": "linux", "RequestTags": tags}
    first = await client.register(node_key, hostinfo=info)
    auth_url = first["AuthURL"]
    waiting = asyncio.ensure_future(client.register(node_key, hostinfo=info, followup=auth_url))
    await asyncio.sleep(0.1)
    approval = await api(harness, "/auth/register", {"auth_id": auth_url.rsplit("/", 1)[1], "user": user})
    return client, await asyncio.wait_for(waiting, 5), approval


async def test_owner_of_the_tags_makes_a_tagged_node_without_expiry(make_harness: Any) -> None:
    harness: Harness = await make_harness(node={"expiry": "1h"})
    client, answer, (status, body) = await login(harness, ["tag:web"], "alice")
    assert status == 200, body
    assert answer["MachineAuthorized"] and not answer.get("Error")
    node = harness.store.node_by_machine_key(client.machine_key_text)
    assert node.tags == ["tag:web"] and node.user_id is None and node.expiry is None
    assert answer["User"]["DisplayName"] == "Tagged Devices"


async def test_group_ownership_counts_and_tags_are_deduplicated(make_harness: Any) -> None:
    harness: Harness = await make_harness()
    client, answer, (status, _) = await login(harness, ["tag:db", "tag:db"], "bob", hostname="db1")
    assert status == 200 and answer["MachineAuthorized"]
    assert harness.store.node_by_machine_key(client.machine_key_text).tags == ["tag:db"]


async def test_tags_the_user_does_not_own_are_refused_with_the_reason(make_harness: Any) -> None:
    harness: Harness = await make_harness()
    client, answer, (status, body) = await login(harness, ["tag:web", "tag:db", "tag:nobody"], "alice")
    expected = "requested tags [tag:db tag:nobody] are invalid or not permitted"
    assert answer["Error"] == expected and not answer.get("MachineAuthorized")
    assert status == 400 and expected in body["message"] and "alice" in body["message"]
    assert harness.store.node_by_machine_key(client.machine_key_text) is None


async def test_a_flood_of_requested_tags_gets_a_bounded_refusal(make_harness: Any) -> None:
    harness: Harness = await make_harness()
    # 256 is as many as Hostinfo.RequestTags may hold at all (limits: more is refused before this check).
    tags = [f"tag:t{i}" for i in range(256)]
    _, answer, (status, _) = await login(harness, tags, "alice")
    assert status == 400
    assert answer["Error"].endswith("(and 248 more) are invalid or not permitted")
    assert len(answer["Error"]) < 1000


async def test_without_requested_tags_the_node_belongs_to_the_user(make_harness: Any) -> None:
    harness: Harness = await make_harness()
    client, answer, _ = await login(harness, [], "carol")
    node = harness.store.node_by_machine_key(client.machine_key_text)
    assert (
        answer["MachineAuthorized"]
        and node.tags == []
        and node.user_id == harness.store.user_by_name("carol").id
    )


async def test_without_a_policy_no_tag_has_an_owner(make_harness: Any) -> None:
    harness: Harness = await make_harness()
    _, answer, (status, _) = await login(harness, ["tag:web"], "alice", policy=False)
    assert status == 400 and answer["Error"] == "requested tags [tag:web] are invalid or not permitted"
