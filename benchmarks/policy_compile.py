"""Benchmark: compile a large policy over 1,000 and 10,000 nodes, then one node joining.

    python benchmarks/policy_compile.py [NODE_COUNT ...]

Prints wall-clock figures only; it asserts nothing about time. The policy has
hundreds of rules over many groups and tags, like a big organisation's:
per-team groups, per-service tags, team-to-service ACLs, grants with ports
and app capabilities, a few ``autogroup:self`` rules, SSH rules and subnet
routers.
"""

from __future__ import annotations

import functools
import json
import random
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pyheadscale.policy import PolicyEngine, PolicyNode, PolicyUser
from pyheadscale.tailcfg.filter import FilterRule

TEAMS = 60
SERVICES = 200
USERS = 600
RULES = 300


def make_policy(rng: random.Random) -> str:
    groups = {
        f"group:team{t}": [f"user{u}@example.com" for u in rng.sample(range(USERS), 12)] for t in range(TEAMS)
    }
    tags = {f"tag:svc{s}": [f"group:team{s % TEAMS}"] for s in range(SERVICES)}
    tags["tag:router"] = ["group:team0"]
    acls: list[dict[str, Any]] = []
    for _ in range(RULES):
        src = [f"group:team{rng.randrange(TEAMS)}" for _ in range(2)]
        dst = [f"tag:svc{rng.randrange(SERVICES)}:{rng.choice(['22', '80,443', '5432', '8000-8999', '*'])}"]
        acls.append({"action": "accept", "src": src, "dst": dst})
    acls.append({"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]})
    acls.append({"action": "accept", "src": ["group:team1"], "dst": ["10.0.0.0/8:*"]})
    grants = [
        {
            "src": [f"tag:svc{rng.randrange(SERVICES)}"],
            "dst": [f"tag:svc{rng.randrange(SERVICES)}"],
            "ip": ["tcp:443"],
            "app": {"example.com/cap/api": [{"role": "reader"}]},
        }
        for _ in range(50)
    ]
    ssh = [
        {"action": "accept", "src": [f"group:team{t}"], "dst": [f"tag:svc{t}"], "users": ["root", "ubuntu"]}
        for t in range(TEAMS)
    ]
    return json.dumps(
        {
            "groups": groups,
            "tagOwners": tags,
            "acls": acls,
            "grants": grants,
            "ssh": ssh,
            "autoApprovers": {"routes": {"10.0.0.0/8": ["tag:router"]}},
        }
    )


def make_node(index: int, rng: random.Random) -> PolicyNode:
    ipv4 = f"100.{64 + index // 65536}.{(index // 256) % 256}.{index % 256}"
    ipv6 = f"fd7a:115c:a1e0::{index:x}"
    if index % 50 == 0:
        route = f"10.{index // 50 % 256}.0.0/16"
        return PolicyNode(
            index, f"router{index}", None, None, ("tag:router",), ipv4, ipv6, (route,), (route,)
        )
    if index % 3 == 0:
        return PolicyNode(
            index, f"svc{index}", None, None, (f"tag:svc{rng.randrange(SERVICES)}",), ipv4, ipv6
        )
    user = rng.randrange(USERS)
    return PolicyNode(index, f"laptop{index}", f"user{user}", user + 1, (), ipv4, ipv6)


T = TypeVar("T")


def timed(label: str, action: Callable[[], T]) -> T:
    start = time.perf_counter()
    result = action()
    print(f"  {label:52} {time.perf_counter() - start:9.3f} s")
    return result


def filters_of(engine: PolicyEngine, node_ids: Iterable[int]) -> list[list[FilterRule]]:
    return [engine.filter_rules(i) for i in node_ids]


def run(node_count: int) -> None:
    rng = random.Random(node_count)
    policy = make_policy(rng)
    users = [PolicyUser(u + 1, f"user{u}", f"user{u}@example.com") for u in range(USERS)]
    nodes = [make_node(i, rng) for i in range(1, node_count + 1)]
    print(
        f"{node_count} nodes, {RULES + 2} ACLs, 50 grants, {TEAMS} SSH rules, {TEAMS} groups, {SERVICES} tags"
    )

    engine = timed(
        "parse, validate, resolve aliases, compile grants", lambda: PolicyEngine(policy, users, nodes)
    )
    timed("packet filters for every node", lambda: [engine.filter_rules(n.id) for n in nodes])
    sample = nodes[:: max(1, node_count // 100)]
    timed(f"peers for {len(sample)} nodes", lambda: [engine.peers(n.id) for n in sample])
    timed(f"SSH policies for {len(sample)} nodes", lambda: [engine.ssh_policy(n.id) for n in sample])

    for label, joining in (
        (
            "laptop",
            PolicyNode(
                node_count + 1, "new-laptop", "user7", 8, (), "100.127.255.1", "fd7a:115c:a1e0::ffff:1"
            ),
        ),
        (
            "service",
            PolicyNode(
                node_count + 2,
                "new-svc",
                None,
                None,
                ("tag:svc3",),
                "100.127.255.2",
                "fd7a:115c:a1e0::ffff:2",
            ),
        ),
    ):
        affected = timed(
            f"{label} joins: incremental update", functools.partial(engine.add_or_update_node, joining)
        )
        timed(
            f"{label} joins: filters of {len(affected)} affected nodes",
            functools.partial(filters_of, engine, affected),
        )
        timed(f"{label} joins: its own peers", functools.partial(engine.peers, joining.id))


def main(argv: list[str]) -> int:
    for count in [int(a) for a in argv] or [1000, 10000]:
        run(count)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
