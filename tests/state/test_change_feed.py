"""Mutations apply the policy's consequences themselves and return their changes; the feed delivers them in
causal order. A store and a policy manager on a throwaway SQLite database, no server: what the feed shows is
exactly what the mutations returned."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pyheadscale.config import build_config
from pyheadscale.db.database import Database
from pyheadscale.state.changes import Change, ChangeKind
from pyheadscale.state.feed import ChangeFeed
from pyheadscale.state.ipalloc import IPAllocator
from pyheadscale.state.models import Node
from pyheadscale.state.policy import PolicyManager
from pyheadscale.state.store import Store

ROUTES = ["10.1.0.0/16", "192.168.7.0/24"]
AUTO_APPROVED = ["10.1.0.0/16"]
POLICY = {
    "acls": [{"action": "accept", "src": ["alice@"], "dst": ["alice@:*"]}],
    "autoApprovers": {"routes": {"10.0.0.0/8": ["alice@"]}},
}


@dataclass
class Tailnet:
    store: Store
    policy: PolicyManager
    seen: list[Change] = field(default_factory=list)
    # At each delivery: was every route the policy auto-approves already approved in the store?
    caught_up: list[bool] = field(default_factory=list)

    def watch(self, change: Change) -> None:
        self.seen.append(change)
        self.caught_up.append(
            all(
                set(self.policy.auto_approved_routes(node)) <= set(node.approved_routes)
                for node in self.store.nodes.values()
            )
        )

    def kinds(self) -> list[tuple[ChangeKind, int | None]]:
        return [(c.kind, c.node_id) for c in self.seen]

    async def node(self, hostname: str, routes: list[str] | None = None) -> Node:
        user = self.store.user_by_name("alice") or await self.store.create_user("alice")
        hostinfo: dict[str, Any] = {"Hostname": hostname}
        if routes:
            hostinfo["RoutableIPs"] = routes
        return await self.store.register(
            machine_key=f"mkey:{hostname}",
            node_key=f"nodekey:{hostname}",
            hostinfo=hostinfo,
            user_id=user.id,
            tags=[],
            method="cli",
            ephemeral=False,
            expiry=None,
        )


@pytest.fixture
async def tailnet(tmp_path: Path) -> AsyncIterator[Tailnet]:
    config = build_config({"server_url": "http://127.0.0.1:1"}, data_dir=tmp_path)
    db = await Database.open_url(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    store = Store(db, IPAllocator("100.64.0.0/10", "fd7a:115c:a1e0::/48", "sequential"))
    await store.load()
    policy = PolicyManager(config, store)
    await policy.start()
    store.attach_policy(policy)
    net = Tailnet(store, policy)
    store.feed.subscribe(net.watch)
    try:
        yield net
    finally:
        await store.close()
        await db.close()


async def test_announced_routes_are_auto_approved_in_the_same_mutation(tailnet: Tailnet) -> None:
    """The real-client failure: a router's announced routes appeared in the store before autoApprovers had
    approved them (a subscriber spawned the approval as a write of its own)."""
    await tailnet.policy.apply(json.dumps(POLICY))
    router = await tailnet.node("router")
    tailnet.seen.clear()
    hostinfo = {"Hostname": "router", "RoutableIPs": ROUTES}
    updated = await tailnet.store.update_from_map_request(
        router, disco_key=None, endpoints=None, hostinfo=hostinfo
    )
    assert updated.announced_routes == ROUTES
    assert updated.approved_routes == AUTO_APPROVED  # in the record the mutation returned
    assert tailnet.store.nodes[router.id].approved_routes == AUTO_APPROVED
    # The node, then the filters its approved routes changed; no second write (an approval) after them.
    assert tailnet.kinds()[0] == (ChangeKind.NODE_UPDATED, router.id)
    assert [c.kind for c in tailnet.seen[1:]] == [ChangeKind.POLICY_NODES]
    assert all(tailnet.caught_up), tailnet.seen


async def test_a_joining_router_is_approved_and_announced_before_its_policy_consequences(
    tailnet: Tailnet,
) -> None:
    await tailnet.policy.apply(json.dumps(POLICY))
    first = await tailnet.node("first")
    tailnet.seen.clear()
    router = await tailnet.node("router", ROUTES)
    assert router.approved_routes == AUTO_APPROVED
    # The node first, then the nodes whose filters it changed (first's filter names alice's nodes): a
    # consumer told of POLICY_NODES already knows the node that caused it.
    assert tailnet.kinds() == [(ChangeKind.NODE_ADDED, router.id), (ChangeKind.POLICY_NODES, None)]
    assert first.id in tailnet.seen[1].node_ids
    assert all(tailnet.caught_up), tailnet.seen


async def test_a_new_policy_approves_announced_routes_in_its_own_mutation(tailnet: Tailnet) -> None:
    router = await tailnet.node("router", ROUTES)
    assert router.approved_routes == []  # no policy: nothing is auto-approved
    tailnet.seen.clear()
    await tailnet.policy.apply(json.dumps(POLICY))
    # Approved by the time apply returns, and already when the feed told anyone of the new policy.
    assert tailnet.store.nodes[router.id].approved_routes == AUTO_APPROVED
    assert tailnet.kinds() == [(ChangeKind.POLICY, None), (ChangeKind.NODE_UPDATED, router.id)]
    assert all(tailnet.caught_up), tailnet.seen
    # The engine in force knows the approval: the router's routes count (it is primary for them).
    assert tailnet.policy.primary_routes_of(router.id) == AUTO_APPROVED


async def test_a_policy_that_does_not_compile_changes_nothing(tailnet: Tailnet) -> None:
    router = await tailnet.node("router", ROUTES)
    tailnet.seen.clear()
    bad = {"acls": [{"action": "accept", "src": ["group:nobody"], "dst": ["*:*"]}], **POLICY}
    bad["acls"] = [{"action": "accept", "src": ["group:nobody"], "dst": ["*:*"]}]
    with pytest.raises(Exception, match="group:nobody"):
        await tailnet.policy.apply(json.dumps(bad))
    assert tailnet.seen == []
    assert tailnet.store.nodes[router.id].approved_routes == []


async def test_a_removed_node_comes_before_the_filters_it_changed(tailnet: Tailnet) -> None:
    await tailnet.policy.apply(json.dumps(POLICY))
    first, second = await tailnet.node("first"), await tailnet.node("second")
    tailnet.seen.clear()
    await tailnet.store.delete_node(second.id)
    assert tailnet.kinds() == [(ChangeKind.NODE_REMOVED, second.id), (ChangeKind.POLICY_NODES, None)]
    assert first.id in tailnet.seen[1].node_ids


def test_the_feed_delivers_in_order_what_is_published_during_a_delivery() -> None:
    """Every subscriber sees one order, even if one publishes while the feed is delivering."""
    feed = ChangeFeed()
    first: list[ChangeKind] = []
    second: list[ChangeKind] = []

    def publishing(change: Change) -> None:
        first.append(change.kind)
        if change.kind is ChangeKind.NODE_ADDED:
            feed.publish([Change(ChangeKind.POLICY_NODES, node_ids=frozenset({1}))])

    def failing(change: Change) -> None:
        second.append(change.kind)
        raise RuntimeError("a broken subscriber does not stop the others")

    feed.subscribe(publishing)
    feed.subscribe(failing)
    feed.publish([Change(ChangeKind.NODE_ADDED, 2), Change(ChangeKind.NODE_PATCH, 2)])
    expected = [ChangeKind.NODE_ADDED, ChangeKind.NODE_PATCH, ChangeKind.POLICY_NODES]
    assert first == expected and second == expected
