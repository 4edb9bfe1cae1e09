"""Incremental updates equal a full recompile: random policies, random tailnets, random changes.

After every join, removal, retag, owner change or route change, each node's packet filter, SSH policy, peers
(with the routes seen on each) and capabilities from the engine that was updated in place must be exactly
what a new engine compiled from the same policy and tailnet gives; and every node whose results changed must
be among the ids the update returned.
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

import pytest

from pyheadscale.policy import PolicyEngine, PolicyError, PolicyNode, PolicyUser

TAGS = ["tag:web", "tag:db", "tag:router", "tag:exit", "tag:ci"]
GROUPS = ["group:dev", "group:ops", "group:all"]
SUBNETS = ["10.1.0.0/16", "10.2.0.0/16", "10.1.5.0/24", "192.168.7.0/24"]
EXIT = ["0.0.0.0/0", "::/0"]
USERS = [
    PolicyUser(1, "odin", "odin@example.com"),
    PolicyUser(2, "thor", "thor@example.com"),
    PolicyUser(3, "loki", "loki@example.org"),
    PolicyUser(4, "freya", "freya@example.org"),
]
PORTS = ["*", "22", "80,443", "5432", "1000-2000"]
SOURCES = [
    "*",
    *GROUPS,
    *TAGS,
    "odin@example.com",
    "loki@example.org",
    "autogroup:member",
    "autogroup:tagged",
    "db-host",
    "10.1.0.0/16",
    "100.64.0.3",
]
DESTINATIONS = [*SOURCES, "autogroup:internet", "192.168.7.0/24", "8.8.8.0/24"]


def random_policy(rng: random.Random) -> str:
    groups = {
        "group:dev": ["odin@example.com", "thor@example.com"],
        "group:ops": ["loki@example.org"],
        "group:all": [u.email for u in USERS],
    }
    acls: list[dict[str, Any]] = []
    for _ in range(rng.randrange(1, 7)):
        destinations = [f"{d}:{rng.choice(PORTS)}" for d in rng.sample(DESTINATIONS, rng.randrange(1, 3))]
        if rng.random() < 0.2:
            destinations.append(f"autogroup:self:{rng.choice(PORTS)}")
            sources = rng.sample(["autogroup:member", *GROUPS, "odin@example.com"], rng.randrange(1, 3))
        else:
            sources = rng.sample(SOURCES, rng.randrange(1, 3))
        acls.append({"action": "accept", "src": sources, "dst": destinations})
    grants: list[dict[str, Any]] = []
    for _ in range(rng.randrange(0, 4)):
        grant: dict[str, Any] = {
            "src": rng.sample(SOURCES, rng.randrange(1, 3)),
            "dst": rng.sample([d for d in DESTINATIONS if d != "autogroup:internet"], rng.randrange(1, 3)),
            "ip": [rng.choice(["tcp:443", "*", "udp:53"])],
        }
        if rng.random() < 0.4:
            grant["app"] = {
                rng.choice(["example.com/cap/api", "tailscale.com/cap/drive"]): [{"role": "reader"}]
            }
        if rng.random() < 0.3:
            grant["dst"] = [rng.choice(["10.1.0.0/16", "192.168.7.0/24", "autogroup:internet"])]
            grant["via"] = [rng.choice(["tag:router", "tag:exit"])]
            grant.pop("app", None)
        grants.append(grant)
    ssh = [
        {
            "action": "accept",
            "src": rng.sample(["autogroup:member", *GROUPS, "odin@example.com", "tag:ci"], 1),
            "dst": [rng.choice(["autogroup:self", "tag:web", "tag:db", "autogroup:tagged"])],
            "users": [rng.choice(["root", "autogroup:nonroot", "localpart:*@example.com"])],
        }
        for _ in range(rng.randrange(0, 3))
    ]
    ssh = [rule for rule in ssh if not (rule["dst"] == ["autogroup:self"] and rule["src"] == ["tag:ci"])]
    policy: dict[str, Any] = {
        "groups": groups,
        "tagOwners": {tag: ["group:ops"] for tag in TAGS},
        "hosts": {"db-host": "100.64.0.4"},
        "acls": acls,
        "grants": grants,
        "ssh": ssh,
        "nodeAttrs": [{"target": [rng.choice(["tag:db", "group:dev"])], "attr": ["disable-ipv4"]}]
        if rng.random() < 0.3
        else [],
    }
    return json.dumps(policy)


class Nodes:
    """Random nodes with unique ids and addresses (an id is never reused once removed)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.next_id = 1

    def make(self, node_id: int | None = None) -> PolicyNode:
        rng = self.rng
        if node_id is None:
            node_id, self.next_id = self.next_id, self.next_id + 1
        return self.with_identity(
            PolicyNode(
                node_id, f"n{node_id}", None, None, (), f"100.64.0.{node_id}", f"fd7a:115c:a1e0::{node_id:x}"
            ),
            rng.random(),
        )

    def with_identity(self, node: PolicyNode, roll: float) -> PolicyNode:
        """The node as a user's device or a tagged one, maybe advertising (and approved for) routes."""
        rng = self.rng
        if roll < 0.5:
            user = rng.choice(USERS)
            node = dataclasses.replace(node, user=user.name, user_id=user.id, tags=())
        else:
            node = dataclasses.replace(node, user=None, user_id=None, tags=tuple(rng.sample(TAGS, 1)))
        return self.with_routes(node) if rng.random() < 0.3 else node

    def with_routes(self, node: PolicyNode) -> PolicyNode:
        rng = self.rng
        advertised = rng.sample(SUBNETS, rng.randrange(0, 3)) + (EXIT if rng.random() < 0.3 else [])
        approved = [r for r in advertised if rng.random() < 0.8]
        return dataclasses.replace(node, routable_ips=tuple(advertised), approved_routes=tuple(approved))


def snapshot(engine: PolicyEngine, node_id: int) -> dict[str, Any]:
    return {
        "filter": engine.filter_rules(node_id),
        "ssh": engine.ssh_policy(node_id),
        "peers": {
            peer: (view.allowed_ips, view.primary_routes) for peer, view in engine.peers(node_id).items()
        },
        "caps": engine.cap_map(node_id),
    }


def change(engine: PolicyEngine, nodes: Nodes, rng: random.Random) -> tuple[str, set[int]]:
    """One random tailnet change applied incrementally; its description and the ids it reported."""
    current = list(engine.tailnet.nodes.values())
    roll = rng.random()
    if roll < 0.35 or len(current) < 3:
        node = nodes.make()
        return f"join {node}", engine.add_or_update_node(node)
    victim = rng.choice(current)
    if roll < 0.55:
        return f"remove {victim.id}", engine.remove_node(victim.id)
    if roll < 0.75:
        node = nodes.with_identity(victim, rng.random())
    elif roll < 0.9:
        node = nodes.with_routes(victim)
    else:
        node = dataclasses.replace(victim, ipv4=f"100.64.1.{victim.id}")
    return f"update {node}", engine.add_or_update_node(node)


def full_snapshots(engine: PolicyEngine) -> dict[int, dict[str, Any]]:
    return {i: snapshot(engine, i) for i in engine.tailnet.nodes}


@pytest.mark.parametrize("seed", range(40))
def test_incremental_updates_equal_full_recompile(seed: int) -> None:
    rng = random.Random(seed)
    nodes = Nodes(rng)
    for _ in range(50):
        policy = random_policy(rng)
        try:
            engine = PolicyEngine(policy, USERS, [nodes.make() for _ in range(rng.randrange(3, 12))])
            break
        except PolicyError:
            continue
    else:
        pytest.fail("no random policy was accepted")
    before = full_snapshots(engine)
    for step in range(25):
        what, affected = change(engine, nodes, rng)
        tailnet = list(engine.tailnet.nodes.values())
        # The same election: which router is primary is sticky across changes, by design.
        full = PolicyEngine(policy, USERS, tailnet, primaries=engine.primaries)
        after = full_snapshots(engine)
        assert after == full_snapshots(full), f"step {step}: {what}"
        changed = {i for i, snap in after.items() if before.get(i) != snap}
        assert changed <= affected, f"step {step}: {what}: changed but not reported {changed - affected}"
        before = after


def test_leave_of_a_node_sharing_an_address_keeps_the_other_nodes_address() -> None:
    """A leaving node's addresses are cut out of the aliases naming it, except one a remaining node shares."""
    policy = json.dumps(
        {
            "tagOwners": {"tag:web": ["odin@example.com"], "tag:db": ["odin@example.com"]},
            "acls": [{"action": "accept", "src": ["tag:web"], "dst": ["tag:db:5432"]}],
        }
    )
    web = [
        PolicyNode(i, f"web{i}", None, None, ("tag:web",), "100.64.0.9", f"fd7a:115c:a1e0::{i}")
        for i in (1, 2)
    ]
    db = PolicyNode(3, "db", None, None, ("tag:db",), "100.64.0.3", "fd7a:115c:a1e0::3")
    for leaving in (1, 2):
        engine = PolicyEngine(policy, USERS, [*web, db])
        engine.filter_rules(db.id)
        engine.remove_node(leaving)
        remaining = [n for n in engine.tailnet.nodes.values()]
        assert engine.filter_rules(db.id) == PolicyEngine(policy, USERS, remaining).filter_rules(db.id)
        assert "100.64.0.9" in engine.filter_rules(db.id)[0]["SrcIPs"]
