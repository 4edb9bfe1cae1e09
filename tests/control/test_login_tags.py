"""Tags at interactive login: `tailscale up --advertise-tags` without an auth key makes a tagged node when the
approving user owns every tag (tagOwners), and is refused, naming the tags, otherwise."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from pyheadscale.client.control import ControlClient
from pyheadscale.tailkey import NodePrivate
from tests.live_server import LiveServer, StartLive

POLICY = {
    "groups": {"group:ops": ["bob@"]},
    "tagOwners": {"tag:web": ["alice@"], "tag:db": ["group:ops"]},
    "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
}


async def api(live: LiveServer, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    _, secret = await live.store.create_api_key(None)
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {secret}"}) as http,
        http.post(f"{live.url}/api/v1{path}", json=body) as resp,
    ):
        return resp.status, await resp.json()


async def login(
    live: LiveServer, tags: Any, user: str, *, hostname: str = "web1", policy: bool = True
) -> tuple[ControlClient, dict[str, Any], tuple[int, dict[str, Any]]]:
    """A keyless login asking for `tags`, approved for `user` by `auth register`; the client's answer."""
    for name in ("alice", "bob", "carol"):
        if live.store.user_by_name(name) is None:
            await live.store.create_user(name)
    assert live.server.policy is not None
    if policy and live.server.policy.text is None:
        await live.server.policy.apply(json.dumps(POLICY))
    client = await live.client()
    node_key = NodePrivate.generate()
    info = {"Hostname": hostname, "OS": "linux", "RequestTags": tags}
    first = await client.register(node_key, hostinfo=info)
    auth_url = first["AuthURL"]
    waiting = asyncio.ensure_future(client.register(node_key, hostinfo=info, followup=auth_url))
    await asyncio.sleep(0.1)
    approval = await api(live, "/auth/register", {"auth_id": auth_url.rsplit("/", 1)[1], "user": user})
    return client, await asyncio.wait_for(waiting, 5), approval


async def test_owner_of_the_tags_makes_a_tagged_node_without_expiry(start_live: StartLive) -> None:
    live: LiveServer = await start_live(node={"expiry": "1h"})
    client, answer, (status, body) = await login(live, ["tag:web"], "alice")
    assert status == 200, body
    assert answer["MachineAuthorized"] and not answer.get("Error")
    node = live.store.node_by_machine_key(client.machine_key_text)
    assert node is not None
    assert node.tags == ["tag:web"] and node.user_id is None and node.expiry is None
    assert answer["User"]["DisplayName"] == "Tagged Devices"


async def test_group_ownership_counts_and_tags_are_deduplicated(start_live: StartLive) -> None:
    live: LiveServer = await start_live()
    client, answer, (status, _) = await login(live, ["tag:db", "tag:db"], "bob", hostname="db1")
    assert status == 200 and answer["MachineAuthorized"]
    node = live.store.node_by_machine_key(client.machine_key_text)
    assert node is not None and node.tags == ["tag:db"]


async def test_tags_the_user_does_not_own_are_refused_with_the_reason(start_live: StartLive) -> None:
    live: LiveServer = await start_live()
    client, answer, (status, body) = await login(live, ["tag:web", "tag:db", "tag:nobody"], "alice")
    expected = "requested tags [tag:db tag:nobody] are invalid or not permitted"
    assert answer["Error"] == expected and not answer.get("MachineAuthorized")
    assert status == 400 and expected in body["message"] and "alice" in body["message"]
    assert live.store.node_by_machine_key(client.machine_key_text) is None


async def test_a_flood_of_requested_tags_gets_a_bounded_refusal(start_live: StartLive) -> None:
    live: LiveServer = await start_live()
    # 256 is as many as Hostinfo.RequestTags may hold at all (limits: more is refused before this check).
    tags = [f"tag:t{i}" for i in range(256)]
    _, answer, (status, _) = await login(live, tags, "alice")
    assert status == 400
    assert answer["Error"].endswith("(and 248 more) are invalid or not permitted")
    assert len(answer["Error"]) < 1000


async def test_without_requested_tags_the_node_belongs_to_the_user(start_live: StartLive) -> None:
    live: LiveServer = await start_live()
    client, answer, _ = await login(live, [], "carol")
    node = live.store.node_by_machine_key(client.machine_key_text)
    carol = live.store.user_by_name("carol")
    assert node is not None and carol is not None
    assert answer["MachineAuthorized"] and node.tags == [] and node.user_id == carol.id


async def test_without_a_policy_no_tag_has_an_owner(start_live: StartLive) -> None:
    live: LiveServer = await start_live()
    _, answer, (status, _) = await login(live, ["tag:web"], "alice", policy=False)
    assert status == 400 and answer["Error"] == "requested tags [tag:web] are invalid or not permitted"
