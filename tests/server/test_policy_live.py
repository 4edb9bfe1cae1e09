"""The policy in force on a running server: maps carry it, changes reach nodes, bad ones are refused."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from pyheadscale.client.control import ControlClient
from pyheadscale.policy import PolicyError
from pyheadscale.tailcfg.filter import FilterRule
from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.live_server import StartLive

ALLOW_SSH = {"acls": [{"action": "accept", "src": ["alice@"], "dst": ["bob@:22"]}]}
ALLOW_WEB = {"acls": [{"action": "accept", "src": ["alice@"], "dst": ["bob@:80"]}]}


def covers(source: str, address: Any) -> bool:
    """Whether a FilterRule source (`*`, a CIDR, an `a-b` range or one IP) includes `address`."""
    if source == "*":
        return True
    if "-" in source:
        first, last = (ipaddress.ip_address(part) for part in source.split("-"))
        return first.version == address.version and first <= address <= last
    return address in ipaddress.ip_network(source, strict=False)


def dst_ports(rules: list[FilterRule]) -> set[tuple[int, int]]:
    return {(p["Ports"]["First"], p["Ports"]["Last"]) for rule in rules for p in rule.get("DstPorts", [])}


async def join(server: Any, user: str) -> tuple[ControlClient, NodePrivate, Any]:
    store = server.store
    owner = store.user_by_name(user) or await store.create_user(user)
    _, key = await store.create_preauth_key(owner.id)
    client = ControlClient(server.config.server_url, MachinePrivate.generate())
    await client.connect()
    node_key = NodePrivate.generate()
    answer = await client.register(node_key, auth_key=key, hostname=f"{user}-laptop")
    assert answer["MachineAuthorized"], answer
    stream = client.map_stream(node_key, hostname=f"{user}-laptop")
    return client, node_key, stream


async def next_with(stream: Any, field: str, limit: float = 10.0) -> dict[str, Any]:
    """The next map message that carries `field` (keep-alives and other deltas are passed over)."""

    async def find() -> dict[str, Any]:
        async for message in stream:
            if field in message:
                return dict(message)
        raise AssertionError("map stream ended")

    return await asyncio.wait_for(find(), limit)


async def test_policy_file_drives_filters_and_reload_reaches_connected_nodes(
    start_live: StartLive, tmp_path: Path
) -> None:
    policy_file = tmp_path / "policy.hujson"
    policy_file.write_text("// alice may ssh to bob\n" + json.dumps(ALLOW_SSH) + "\n")
    server = (await start_live(policy={"mode": "file", "path": str(policy_file)})).server
    assert server.store is not None and server.policy is not None
    alice, _, alice_stream = await join(server, "alice")
    bob, _, bob_stream = await join(server, "bob")
    try:
        first_alice = await next_with(alice_stream, "Node")
        first_bob = await next_with(bob_stream, "Node")
        assert dst_ports(first_bob["PacketFilters"]["base"]) == {(22, 22)}
        assert first_alice["PacketFilters"]["base"] == [], "nothing may reach alice"

        policy_file.write_text(json.dumps(ALLOW_WEB))
        assert await server.policy.reload()
        update = await next_with(bob_stream, "PacketFilters")
        assert dst_ports(update["PacketFilters"]["base"]) == {(80, 80)}

        # A broken policy is refused and the one in force stays.
        policy_file.write_text('{"acls": [{"action": "accept", "src": ["nobody-group"], "dst": ["*:*"]},]}')
        assert not await server.policy.reload()
        assert server.policy.text == json.dumps(ALLOW_WEB)
        bob_node = next(n for n in server.store.nodes.values() if n.hostname == "bob-laptop")
        assert dst_ports(server.policy.filter_rules(bob_node.id)) == {(80, 80)}
    finally:
        await alice.close()
        await bob.close()


async def test_invalid_policy_file_at_start_is_a_clear_error(start_live: StartLive, tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.hujson"
    policy_file.write_text('{"acls": [{"action": "allow-ish"}]}')
    with pytest.raises(PolicyError, match=str(policy_file)):
        await start_live(policy={"mode": "file", "path": str(policy_file)})


async def test_database_mode_validates_stores_and_survives_restart(start_live: StartLive) -> None:
    live = await start_live(policy={"mode": "database"})
    server = live.server
    assert server.store is not None and server.policy is not None
    await server.store.create_user("alice")
    await server.store.create_user("bob")
    with pytest.raises(PolicyError):
        await server.policy.set_policy(
            '{"acls": [{"action": "accept", "src": ["group:nope"], "dst": ["*:*"]}]}'
        )
    assert server.policy.text is None
    await server.policy.set_policy(json.dumps(ALLOW_SSH))
    assert server.policy.text == json.dumps(ALLOW_SSH)
    await server.stop()

    again = (await start_live(data_dir=live.data_dir, policy={"mode": "database"})).server
    assert again.policy is not None
    assert again.policy.text == json.dumps(ALLOW_SSH)


async def test_a_join_updates_the_filters_of_nodes_whose_rules_name_it(
    start_live: StartLive, tmp_path: Path
) -> None:
    """alice's first node must accept packets from her second as soon as it joins, not at a later full map."""
    policy_file = tmp_path / "policy.hujson"
    policy_file.write_text(
        json.dumps(
            {
                "groups": {"group:eng": ["alice@"]},
                "acls": [{"action": "accept", "src": ["group:eng"], "dst": ["group:eng:*"]}],
            }
        )
    )
    server = (await start_live(policy={"mode": "file", "path": str(policy_file)})).server
    assert server.store is not None and server.policy is not None
    first, _, first_stream = await join(server, "alice")
    second = None
    try:
        initial = await next_with(first_stream, "Node")
        sources = {ip for rule in initial["PacketFilters"]["base"] for ip in rule["SrcIPs"]}
        second, _, _ = await join(server, "alice")
        newcomer = max(server.store.nodes.values(), key=lambda n: n.id)
        assert not any(covers(src, newcomer.ipv4) for src in sources)
        update = await next_with(first_stream, "PacketFilters")
        sources = {ip for rule in update["PacketFilters"]["base"] for ip in rule["SrcIPs"]}
        assert any(covers(src, newcomer.ipv4) for src in sources), update["PacketFilters"]
    finally:
        await first.close()
        if second is not None:
            await second.close()
