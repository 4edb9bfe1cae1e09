"""Concurrent registrations: a single-use key admits one machine, a machine gets one node."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.live_server import LiveServer


async def test_single_use_key_raced_by_many_machines(live: LiveServer) -> None:
    key = await live.preauth_key(reusable=False)
    clients = [await live.client() for _ in range(6)]
    answers = await asyncio.gather(*(c.register(NodePrivate.generate(), auth_key=key) for c in clients))
    authorized = [a for a in answers if a["MachineAuthorized"]]
    assert len(authorized) == 1, [a["Error"] for a in answers]
    assert all("already used" in a["Error"] for a in answers if not a["MachineAuthorized"])
    assert len(live.store.nodes) == 1


async def test_same_machine_registering_twice_at_once(live: LiveServer) -> None:
    key = await live.preauth_key()
    machine = MachinePrivate.generate()
    clients = [await live.client(machine) for _ in range(2)]
    node_keys = [NodePrivate.generate() for _ in range(2)]
    answers: list[Any] = await asyncio.gather(
        *(c.register(k, auth_key=key) for c, k in zip(clients, node_keys, strict=True)),
        return_exceptions=True,
    )
    assert not [a for a in answers if isinstance(a, BaseException)], answers
    assert any(a["MachineAuthorized"] for a in answers)
    nodes = [n for n in live.store.nodes.values() if n.machine_key == machine.public().text]
    assert len(nodes) == 1
    # and the store's indexes agree with its records
    node = nodes[0]
    assert live.store.node_by_machine_key(node.machine_key) is node
    assert live.store.node_by_node_key(node.node_key) is node
    await live.restart()
    reloaded = [n for n in live.store.nodes.values() if n.machine_key == node.machine_key]
    assert len(reloaded) == 1 and reloaded[0].id == node.id


async def test_same_node_key_from_two_machines_at_once(live: LiveServer) -> None:
    key = await live.preauth_key()
    node_key = NodePrivate.generate()
    clients = [await live.client() for _ in range(2)]
    answers = await asyncio.gather(*(c.register(node_key, auth_key=key) for c in clients))
    assert sum(bool(a["MachineAuthorized"]) for a in answers) == 1, answers
    assert len(live.store.nodes) == 1


async def test_concurrent_updates_of_one_node_do_not_lose_each_other(live: LiveServer) -> None:
    """A map request's update and an operator's rename racing on one node both stick."""
    node = await live.node("racer")
    store = live.store
    record = live.record(node)
    rename = asyncio.ensure_future(store.rename_node(record.id, "renamed"))
    await asyncio.sleep(0)
    update = asyncio.ensure_future(
        store.update_from_map_request(record, disco_key=None, endpoints=["198.51.100.1:41641"], hostinfo=None)
    )
    await asyncio.gather(rename, update)
    current = store.nodes[record.id]
    assert current.given_name == "renamed"
    assert current.endpoints == ["198.51.100.1:41641"]
    await live.restart()
    reloaded = live.store.nodes[record.id]
    assert (reloaded.given_name, reloaded.endpoints) == ("renamed", ["198.51.100.1:41641"])


async def test_map_update_racing_rotation_keeps_new_key(live: LiveServer) -> None:
    node = await live.node("rot")
    store = live.store
    record = live.record(node)
    new_key = NodePrivate.generate().public().text
    rotate = asyncio.ensure_future(store.rotate_node_key(record, new_key, {}))
    await asyncio.sleep(0)
    update = asyncio.ensure_future(
        store.update_from_map_request(record, disco_key=None, endpoints=["198.51.100.2:41641"], hostinfo=None)
    )
    await asyncio.gather(rotate, update)
    current = store.nodes[record.id]
    assert current.node_key == new_key
    assert store.node_by_node_key(new_key) is current
    assert store.node_by_node_key(node.node_key_text) is None


async def test_mutation_spawned_during_a_mutation_waits_its_turn(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task started from inside a mutation (a timer firing mid-write, say) is serialized like any other."""
    a = await live.node("a")
    b = await live.node("b")
    store = live.store
    a_id = live.record(a).id
    b_id = live.record(b).id
    log: list[str] = []
    spawned: list[asyncio.Task[Any]] = []
    original = store.db.update_node

    async def update_node(node: Any) -> None:
        log.append(f"start {node.given_name}")
        if node.given_name == "first" and not spawned:
            spawned.append(asyncio.ensure_future(store.rename_node(b_id, "second")))
            await asyncio.sleep(0.05)
        await original(node)
        log.append(f"end {node.given_name}")

    monkeypatch.setattr(store.db, "update_node", update_node)
    await store.rename_node(a_id, "first")
    await spawned[0]
    assert log == ["start first", "end first", "start second", "end second"]
