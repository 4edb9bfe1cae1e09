"""Engine behaviour beyond the corpus: incremental updates, allow-all, errors, auto-approval."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from pyheadscale.policy import PeerView, PolicyEngine, PolicyError, PolicyNode, PolicyUser
from pyheadscale.policy.simulate import case_inputs
from tests.policy.compare import filters_equivalent
from tests.policy.corpus import CORPUS_DIR, case_files

ACCEPTED = [p for p in case_files() if json.loads(p.read_text(encoding="utf-8"))["expected"]["accepted"]]
needs_corpus = pytest.mark.skipif(not ACCEPTED, reason=f"compatibility corpus not found at {CORPUS_DIR}")

USERS = [PolicyUser(1, "odin", "odin@example.com"), PolicyUser(2, "thor", "thor@example.org")]


def node(node_id: int, user: str | None = None, tags: tuple[str, ...] = (), **routes: Any) -> PolicyNode:
    return PolicyNode(
        id=node_id,
        hostname=f"n{node_id}",
        user=user,
        user_id={"odin": 1, "thor": 2}.get(user or ""),
        tags=tags,
        ipv4=f"100.64.0.{node_id}",
        ipv6=f"fd7a:115c:a1e0::{node_id:x}",
        **routes,
    )


def snapshot(engine: PolicyEngine, node_id: int) -> dict[str, Any]:
    assert engine.peer_ids(node_id) == set(engine.peers(node_id)), node_id
    return {
        "filter": engine.filter_rules(node_id),
        "ssh": engine.ssh_policy(node_id),
        "peers": {
            peer: (sorted(view.allowed_ips), sorted(view.primary_routes))
            for peer, view in engine.peers(node_id).items()
        },
        "caps": engine.cap_map(node_id),
    }


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return filters_equivalent(a["filter"], b["filter"]) is None and {**a, "filter": 0} == {**b, "filter": 0}


@needs_corpus
@pytest.mark.parametrize("path", ACCEPTED, ids=lambda p: p.stem)
def test_incremental_join_and_leave_match_full_compile(path: Path) -> None:
    case = json.loads(path.read_text(encoding="utf-8"))
    users, nodes = case_inputs(case)
    full = PolicyEngine(case["policy"], users, nodes)
    expected = {n.id: snapshot(full, n.id) for n in nodes}
    try:
        engine = PolicyEngine(case["policy"], users, nodes[:-1])
    except PolicyError:
        pytest.skip("the policy's own tests need the full tailnet")
    before = {n.id: snapshot(engine, n.id) for n in nodes[:-1]}

    affected = engine.add_or_update_node(nodes[-1])
    for n in nodes:
        assert same(snapshot(engine, n.id), expected[n.id]), n.hostname
    changed = {i for i, snap in before.items() if not same(snap, expected[i])}
    assert changed <= affected, f"changed but not reported: {changed - affected}"

    affected = engine.remove_node(nodes[-1].id)
    for n in nodes[:-1]:
        assert same(snapshot(engine, n.id), before[n.id]), n.hostname
    assert nodes[-1].id not in affected
    assert {i for i in before if not same(before[i], expected[i])} <= affected


@needs_corpus
@pytest.mark.parametrize("path", ACCEPTED, ids=lambda p: p.stem)
def test_auto_approval_reproduces_captured_approvals(path: Path) -> None:
    case = json.loads(path.read_text(encoding="utf-8"))
    users, nodes = case_inputs(case)
    engine = PolicyEngine(case["policy"], users, nodes)
    for n in nodes:
        assert sorted(engine.auto_approved_routes(n)) == sorted(n.approved_routes), n.hostname


def test_no_policy_allows_everything() -> None:
    nodes = [
        node(1, "odin"),
        node(2, tags=("tag:a",), routable_ips=("10.0.0.0/8",), approved_routes=("10.0.0.0/8",)),
    ]
    engine = PolicyEngine(None, USERS, nodes)
    assert engine.filter_rules(1) == [
        {"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}
    ]
    assert engine.peers(1) == {
        2: PeerView(["100.64.0.2/32", "fd7a:115c:a1e0::2/128", "10.0.0.0/8"], ["10.0.0.0/8"])
    }
    assert engine.ssh_policy(1) is None
    assert engine.cap_map(1) == {}


def test_peer_ids_name_the_peers_without_a_policy_as_nodes_come_and_go() -> None:
    engine = PolicyEngine(None, USERS, [node(1, "odin"), node(2, "thor")])
    assert engine.peer_ids(1) == {2}
    engine.add_or_update_node(node(3, "odin"))
    assert engine.peer_ids(1) == {2, 3} == set(engine.peers(1))
    assert engine.peer_ids(3) == {1, 2}
    assert engine.remove_node(2) == {1, 3}
    assert engine.peer_ids(3) == {1}
    with pytest.raises(KeyError, match="unknown node id 2"):
        engine.peer_ids(2)


def test_filter_reaches_only_destination_nodes() -> None:
    policy = """{"tagOwners": {"tag:web": []},
                 "acls": [{"action": "accept", "src": ["odin@example.com"], "dst": ["tag:web:443"]}]}"""
    engine = PolicyEngine(policy, USERS, [node(1, "odin"), node(2, tags=("tag:web",)), node(3, "thor")])
    web_filter = engine.filter_rules(2)
    assert (
        filters_equivalent(
            web_filter,
            [
                {
                    "SrcIPs": ["100.64.0.1", "fd7a:115c:a1e0::1"],
                    "DstPorts": [
                        {"IP": ip, "Ports": {"First": 443, "Last": 443}}
                        for ip in ("100.64.0.2", "fd7a:115c:a1e0::2")
                    ],
                }
            ],
        )
        is None
    )
    assert engine.filter_rules(1) == []
    assert set(engine.peers(1)) == {2}
    assert set(engine.peers(3)) == set()


def test_join_reports_only_nodes_it_concerns() -> None:
    policy = """{
      "tagOwners": {"tag:web": [], "tag:db": []},
      "acls": [
        {"action": "accept", "src": ["tag:web"], "dst": ["tag:db:5432"]},
        {"action": "accept", "src": ["thor@example.org"], "dst": ["thor@example.org:22"]},
      ],
    }"""
    engine = PolicyEngine(
        policy, USERS, [node(1, tags=("tag:web",)), node(2, tags=("tag:db",)), node(3, "thor")]
    )
    for i in (1, 2, 3):
        snapshot(engine, i)
    # A second web server concerns the database (new peer, new filter source) and itself; the
    # unrelated user node is left alone. (Other web servers may be reported: the set is conservative.)
    affected = engine.add_or_update_node(node(4, tags=("tag:web",)))
    assert {2, 4} <= affected and 3 not in affected
    assert 1 not in engine.peers(4) and 2 in engine.peers(4)
    affected = engine.remove_node(4)
    assert 2 in affected and 3 not in affected and 4 not in affected


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        (
            '{"acls": [{"action": "accept", "src": ["tag:x"], "dst": ["*:*"]}]}',
            "acls[0].src[0] (line 1:40): tag not found",
        ),
        (
            '{\n"grants": [{"src": ["*"], "dst": ["*"]}]}',
            "grants[0] (line 2:12): ip and app can not both be empty",
        ),
        (
            '{"ssh": [{"action": "deny", "src": ["autogroup:member"], "dst": ["autogroup:self"],\n'
            '"users": ["root"]}]}',
            'ssh[0].action (line 1:21): "deny" is not a valid action',
        ),
        (
            '{"acls": [{"action": "accept", "src": ["*"], "dst": ["tag:x:ssh"]}],\n'
            '"tagOwners": {"tag:x": []}}',
            "port range 'ssh': invalid first integer",
        ),
        ('{"groups": {"group:a": ["group:b"], "group:b": []}}', "group members cannot be recursive"),
        ('{"acls": [,]}', "(line 1:11): parsing HuJSON"),
        ('{"bogus": 1}', "unknown field 'bogus'"),
    ],
)
def test_rejections_name_entry_and_position(policy: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        PolicyEngine(policy, USERS, [node(1, "odin")])
    assert fragment in str(info.value)


def test_policy_tests_block_rejects_failing_assertion() -> None:
    policy = """{
      "hosts": {"web": "100.64.0.2"},
      "acls": [{"action": "accept", "src": ["odin@example.com"], "dst": ["web:80"]}],
      "tests": [{"src": "odin@example.com", "accept": ["web:80"], "deny": ["web:443"]}],
    }"""
    PolicyEngine(policy, USERS, [node(1, "odin"), node(2, "thor")])
    with pytest.raises(PolicyError, match="test\\(s\\) failed"):
        PolicyEngine(
            policy.replace('"deny": ["web:443"]', '"deny": ["web:80"]'),
            USERS,
            [node(1, "odin"), node(2, "thor")],
        )


def _variants(nodes: list[PolicyNode]) -> list[tuple[int, PolicyNode]]:
    """Node updates to replay: a router loses its approvals, a tagged node becomes a user's device."""
    out: list[tuple[int, PolicyNode]] = []
    router = next((i for i, n in enumerate(nodes) if n.approved_routes), None)
    if router is not None:
        out.append((router, dataclasses.replace(nodes[router], approved_routes=())))
    tagged = next((i for i, n in enumerate(nodes) if n.tags), None)
    owned = next((n for n in nodes if n.user_id is not None), None)
    if tagged is not None and owned is not None:
        out.append(
            (tagged, dataclasses.replace(nodes[tagged], tags=(), user=owned.user, user_id=owned.user_id))
        )
    return out


@needs_corpus
@pytest.mark.parametrize("path", ACCEPTED, ids=lambda p: p.stem)
def test_incremental_update_matches_full_compile(path: Path) -> None:
    case = json.loads(path.read_text(encoding="utf-8"))
    users, nodes = case_inputs(case)
    for index, updated in _variants(nodes):
        changed_nodes = [*nodes[:index], updated, *nodes[index + 1 :]]
        try:
            full = PolicyEngine(case["policy"], users, changed_nodes)
        except PolicyError:
            continue  # the policy's own tests do not hold for the modified tailnet
        engine = PolicyEngine(case["policy"], users, nodes)
        before = {n.id: snapshot(engine, n.id) for n in nodes}
        affected = engine.add_or_update_node(updated)
        for n in changed_nodes:
            after = snapshot(engine, n.id)
            assert same(after, snapshot(full, n.id)), n.hostname
            if not same(after, before[n.id]):
                assert n.id in affected, n.hostname


def test_engine_built_before_nodes_are_known_then_filled() -> None:
    policy = """{
      "hosts": {"web": "100.64.0.2"},
      "acls": [{"action": "accept", "src": ["odin@example.com"], "dst": ["web:80"]}],
      "tests": [{"src": "odin@example.com", "accept": ["web:80"]}],
    }"""
    engine = PolicyEngine(policy)  # tests need nodes; they are not run against an empty tailnet
    engine.set_nodes(USERS, [node(1, "odin"), node(2, "thor")])
    assert set(engine.peers(1)) == {2}
    assert (
        filters_equivalent(
            engine.filter_rules(2),
            [
                {
                    "SrcIPs": ["100.64.0.1", "fd7a:115c:a1e0::1"],
                    "DstPorts": [{"IP": "100.64.0.2", "Ports": {"First": 80, "Last": 80}}],
                }
            ],
        )
        is None
    )
