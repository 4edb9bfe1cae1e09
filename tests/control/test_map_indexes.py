"""The indexes and caches the map path keeps to stay O(affected peers) per change are always exact.

* the distributor's reverse index (peer id -> sessions that know it) equals a scan of every session's known
  peers after joins, removals, re-tags under a policy, policy swaps and sessions closing;
* the policy engine's incrementally maintained peer maps equal peer maps computed from scratch.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyheadscale.mapper.builder import MapBuilder
from pyheadscale.policy import PolicyEngine, PolicyNode, PolicyUser
from tests.live_server import LiveServer

POLICY = {
    "tagOwners": {"tag:web": ["alice@"]},
    "acls": [
        {"action": "accept", "src": ["alice@"], "dst": ["alice@:*", "tag:web:443"]},
        {"action": "accept", "src": ["bob@"], "dst": ["bob@:*"]},
    ],
}


def scanned(distributor: Any) -> dict[int, set[int]]:
    """Peer id -> ids of sessions knowing it, by scanning every session (what the index replaces)."""
    out: dict[int, set[int]] = defaultdict(set)
    for group in distributor.sessions.values():
        for session in group:
            for pid in session.known_peers:
                out[pid].add(id(session))
    return dict(out)


def indexed(distributor: Any) -> dict[int, set[int]]:
    return {pid: {id(s) for s in group} for pid, group in distributor.index._by_peer.items()}


def drain(distributor: Any) -> None:
    """Let every session build its pending message, as its stream would."""
    for group in list(distributor.sessions.values()):
        for session in group:
            session.take_pending(distributor.builder)


async def test_reverse_index_follows_joins_leaves_tags_and_policy(tmp_path: Path) -> None:
    from pyheadscale.mapper.distributor import MapSession

    live = await LiveServer(tmp_path / "srv", policy={"mode": "database"}).start()
    try:
        server = live.server
        store = server.store
        assert store is not None and server.policy is not None
        alice = await store.create_user("alice")
        bob = await store.create_user("bob")
        distributor = _distributor(server)
        sessions: dict[int, MapSession] = {}

        async def join(user_id: int, n: int) -> int:
            from pyheadscale.tailkey import MachinePrivate, NodePrivate

            node = await store.register(
                machine_key=MachinePrivate.generate().public().text,
                node_key=NodePrivate.generate().public().text,
                hostinfo={"Hostname": f"h{n}"},
                user_id=user_id,
                tags=[],
                method="authkey",
                ephemeral=False,
                expiry=None,
            )
            session = MapSession(node.id, 130)
            session.want_full()
            distributor.add(session)
            sessions[node.id] = session
            drain(distributor)
            return int(node.id)

        def check() -> None:
            drain(distributor)
            assert indexed(distributor) == scanned(distributor)

        ids = [await join(alice.id if i % 2 else bob.id, i) for i in range(8)]
        check()
        assert len(indexed(distributor)[ids[0]]) == 7  # no policy: everybody knows everybody

        await server.policy.set_policy(json.dumps(POLICY))
        check()
        assert all(len(group) <= 3 for group in indexed(distributor).values())

        await store.set_tags(ids[2], ["tag:web"])
        check()
        await store.delete_node(ids[3])
        distributor.remove(sessions.pop(ids[3]))
        check()
        assert ids[3] not in indexed(distributor)

        closed = sessions.pop(ids[4])
        distributor.remove(closed)
        check()
        assert all(id(closed) not in group for group in indexed(distributor).values())

        allow_all = {"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}
        await server.policy.set_policy(json.dumps(allow_all))
        check()
        assert len(indexed(distributor)[ids[0]]) == len(sessions) - 1
    finally:
        await live.stop()


def _distributor(server: Any) -> Any:
    """The server's distributor, found through the store's subscribers (the app does not expose it)."""
    from pyheadscale.mapper.distributor import Distributor

    assert server.store is not None
    for subscriber in server.store.feed._subscribers:
        owner = getattr(subscriber, "__self__", None)
        if isinstance(owner, Distributor):
            return owner
    raise AssertionError("no distributor subscribed")


def _node(i: int, user: str | None, tags: tuple[str, ...] = ()) -> PolicyNode:
    return PolicyNode(
        id=i,
        hostname=f"n{i}",
        user=user,
        user_id={"alice": 1, "bob": 2}.get(user or ""),
        tags=tags,
        ipv4=f"100.64.0.{i}",
        ipv6=f"fd7a:115c:a1e0::{i:x}",
    )


def _fresh_peers(text: str | None, nodes: list[PolicyNode]) -> dict[int, dict[int, Any]]:
    users = [PolicyUser(1, "alice"), PolicyUser(2, "bob")]
    engine = PolicyEngine(text, users, nodes)
    return {n.id: engine.peers(n.id) for n in nodes}


def test_incremental_peer_maps_equal_fresh_ones() -> None:
    wildcard = json.dumps({"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]})
    for text in (None, wildcard, json.dumps(POLICY)):
        users = [PolicyUser(1, "alice"), PolicyUser(2, "bob")]
        engine = PolicyEngine(text, users, [])
        nodes: list[PolicyNode] = []
        for i in range(1, 13):
            node = _node(i, "alice" if i % 3 else "bob", ("tag:web",) if i % 5 == 0 else ())
            if node.tags:
                node = PolicyNode(**{**node.__dict__, "user": None, "user_id": None})
            engine.add_or_update_node(node)
            nodes.append(node)
            for n in nodes:  # warm every cache, so the next join has cached maps to keep right
                engine.peers(n.id)
        engine.add_or_update_node(nodes[0])  # an update that changes nothing the policy reads
        engine.remove_node(nodes[1].id)
        nodes.pop(1)
        fresh = _fresh_peers(text, nodes)
        assert {n.id: engine.peers(n.id) for n in nodes} == fresh, text
        assert all(engine.peer_view(a, b) == fresh[a].get(b) for a in fresh for b in fresh), text


async def test_shared_peer_entries_equal_a_fresh_rendering(tmp_path: Path, monkeypatch: Any) -> None:
    """A peer's entry (and its patch) is shared by recipients with the same view, and is never stale.

    Going offline sets the record's last_seen in place; an entry made while the peer was offline before must
    not be reused with the old LastSeen.
    """
    from pyheadscale.tailkey import MachinePrivate, NodePrivate

    live = await LiveServer(tmp_path / "srv").start()
    try:
        store = live.server.store
        assert store is not None
        builder = _distributor(live.server).builder
        alice = await store.create_user("alice")
        nodes = []
        for i in range(3):
            nodes.append(
                await store.register(
                    machine_key=MachinePrivate.generate().public().text,
                    node_key=NodePrivate.generate().public().text,
                    hostinfo={"Hostname": f"h{i}"},
                    user_id=alice.id,
                    tags=[],
                    method="authkey",
                    ephemeral=False,
                    expiry=None,
                )
            )
        peer = nodes[0]

        def entry_for(viewer: int) -> Any:
            view = builder.ctx.policy.peer_view(viewer, peer.id)
            assert view is not None
            return builder.tail_node(store.nodes[peer.id], view, 130)

        def fresh(viewer: int) -> Any:
            """The entry a builder with nothing cached renders."""
            view = builder.ctx.policy.peer_view(viewer, peer.id)
            assert view is not None
            return MapBuilder(builder.ctx).tail_node(store.nodes[peer.id], view, 130)

        assert entry_for(nodes[1].id) is entry_for(nodes[2].id)
        assert entry_for(nodes[1].id) == fresh(nodes[1].id)
        import pyheadscale.state.store as store_module

        for hour in (1, 2):  # online, offline (last_seen set in place), online, offline an hour later
            stamp = datetime(2026, 1, 1, hour, tzinfo=UTC)
            monkeypatch.setattr(store_module, "now", lambda stamp=stamp: stamp)
            store.connected(peer.id)
            if hour == 1:  # the second time nobody renders it while it is online
                assert entry_for(nodes[1].id)["Online"] is True
                assert entry_for(nodes[1].id) == fresh(nodes[1].id)
            await store.disconnected(peer.id)
            offline = entry_for(nodes[2].id)
            assert offline == fresh(nodes[2].id)
            assert offline["LastSeen"] == fresh(nodes[2].id)["LastSeen"]
            patch = builder.peer_patch(store.nodes[peer.id])
            assert patch == MapBuilder(builder.ctx).peer_patch(store.nodes[peer.id])
            assert patch["Online"] is False and "LastSeen" in patch
            store.connected(peer.id)
            online_patch = builder.peer_patch(store.nodes[peer.id])  # same record, presence changed
            assert online_patch["Online"] is True and "LastSeen" not in online_patch
            assert builder.peer_patch(store.nodes[peer.id]) is online_patch  # shared while nothing changes
            await store.disconnected(peer.id)
    finally:
        await live.stop()
