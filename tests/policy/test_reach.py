"""Peers found per signature and shared between nodes equal the pair-wise definition of peers.

The engine finds a node's peers through :class:`PeerClasses` (once per set of matched tailnet-wide rules,
from an address index once enough nodes asked); this checks both ways of computing a signature, and the
peers they give, against checking every pair of nodes with ``are_peers``, on random policies and tailnets.
"""

from __future__ import annotations

import random

import pytest

from pyheadscale.policy import PolicyEngine, PolicyError
from pyheadscale.policy import reach as reach_module
from pyheadscale.policy.peers import are_peers
from pyheadscale.policy.reach import PeerClasses, signature_of
from tests.policy.test_incremental import USERS, Nodes, change, random_policy


def random_engine(rng: random.Random, nodes: Nodes) -> PolicyEngine:
    for _ in range(50):
        try:
            return PolicyEngine(
                random_policy(rng), USERS, [nodes.make() for _ in range(rng.randrange(3, 14))]
            )
        except PolicyError:
            continue
    pytest.fail("no random policy was accepted")


def pairwise_peers(engine: PolicyEngine, viewer_id: int) -> set[int]:
    viewer = engine.tailnet.nodes[viewer_id]
    mine = engine._matchers(viewer)
    return {
        other.id
        for other in engine.tailnet.nodes.values()
        if other.id != viewer_id
        and (are_peers(viewer, other, mine) or are_peers(viewer, other, engine._own_matchers(other)))
    }


@pytest.mark.parametrize("index_after", [0, 10_000])
@pytest.mark.parametrize("seed", range(30))
def test_shared_peers_equal_pairwise_peers(
    seed: int, index_after: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reach_module, "INDEX_AFTER_VIEWERS", index_after)
    rng = random.Random(seed)
    nodes = Nodes(rng)
    engine = random_engine(rng, nodes)
    for step in range(12):
        for node_id in engine.tailnet.nodes:
            assert engine.peer_ids(node_id) == pairwise_peers(engine, node_id), f"step {step}, node {node_id}"
        change(engine, nodes, rng)


@pytest.mark.parametrize("seed", range(30))
def test_indexed_signature_equals_checked_signature(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reach_module, "INDEX_AFTER_VIEWERS", 0)
    rng = random.Random(seed)
    nodes = Nodes(rng)
    engine = random_engine(rng, nodes)
    for _ in range(8):
        classes = PeerClasses(engine.tailnet, engine._global_matchers())
        for node in engine.tailnet.nodes.values():
            assert classes.signature(node) == signature_of(node, classes.matchers), node
        change(engine, nodes, rng)
