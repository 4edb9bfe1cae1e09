"""Mutations apply the policy's consequences themselves and return their changes; the feed delivers them in
causal order. A store and a policy manager on a throwaway SQLite database, no server: what the feed shows is
exactly what the mutations returned."""

from __future__ import annotations

import json

import pytest

from pyheadscale.state.changes import Change, ChangeKind
from pyheadscale.state.feed import ChangeFeed
from tests.state.conftest import AUTO_APPROVED, POLICY, ROUTES, Tailnet


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
