"""Benchmark: compile a large policy over 1,000 and 10,000 nodes, then nodes joining, changing and leaving.

    python benchmarks/policy_compile.py [NODE_COUNT ...] [--acls 390] [--json out.json]

Each phase is timed twice: wall clock and this process's CPU time. The machine is shared, so the CPU column is
the one to compare between runs. It asserts nothing about time. The policy has 500 rules by default (ACLs,
grants and SSH rules) over many groups and tags, like a big organisation's: per-team groups, per-service tags,
team-to-service ACLs, grants with ports and app capabilities, an ``autogroup:self`` rule, SSH rules and subnet
routers. "full compile" is the engine plus every node's packet filter; "join" is the incremental update plus
the packet filters of every node it reports affected (what the server computes before pushing deltas).

The garbage collector runs as in the server (``pyheadscale.app.serve_forever``): ``prepare_collector``
before the start-up compile (what is imported is frozen out of collections; the server's thresholds), then
``settle_collector`` as once the server is up (a full collection; what exists is frozen too) before the packet
filters (built as nodes connect), the joins and a policy reload (a new engine and every node's filter again).
The last columns give the CPU seconds of each phase spent in collections and how many were full ones.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pyheadscale.app import prepare_collector, settle_collector
from pyheadscale.policy import PolicyEngine, PolicyNode, PolicyUser

TEAMS = 60
SERVICES = 200
USERS = 600
ACLS = 390
GRANTS = 50


def make_policy(rng: random.Random, acl_count: int = ACLS) -> str:
    groups = {
        f"group:team{t}": [f"user{u}@example.com" for u in rng.sample(range(USERS), 12)] for t in range(TEAMS)
    }
    tags = {f"tag:svc{s}": [f"group:team{s % TEAMS}"] for s in range(SERVICES)}
    tags["tag:router"] = ["group:team0"]
    acls: list[dict[str, Any]] = []
    for _ in range(acl_count - 2):
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
        for _ in range(GRANTS)
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


class CollectorClock:
    """CPU seconds spent in the garbage collector's collections (``gc.callbacks``), and how many of them
    were full (generation 2)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.seconds += time.process_time() - self._started
            self.full += info["generation"] == 2


class Phases:
    """Timed phases of one run, printed as they finish: label, wall seconds, CPU seconds, the CPU seconds of
    them in the garbage collector, and how many of its collections were full."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float, float, int]] = []
        self.collector = CollectorClock()

    def timed(self, label: str, action: Callable[[], T]) -> T:
        wall, cpu = time.perf_counter(), time.process_time()
        collected, full = self.collector.seconds, self.collector.full
        result = action()
        self.add(
            label,
            time.perf_counter() - wall,
            time.process_time() - cpu,
            self.collector.seconds - collected,
            self.collector.full - full,
        )
        return result

    def add(self, label: str, wall: float, cpu: float, collector: float, full: int) -> None:
        self.rows.append((label, wall, cpu, collector, full))
        print(f"| {label:58} | {wall:9.3f} | {cpu:9.3f} | {collector:9.3f} | {full:4} |", flush=True)

    def total(self, label: str, parts: int) -> None:
        """A row summing the last ``parts`` rows."""
        last = self.rows[-parts:]
        self.add(
            label,
            sum(r[1] for r in last),
            sum(r[2] for r in last),
            sum(r[3] for r in last),
            sum(r[4] for r in last),
        )


def change(phases: Phases, label: str, action: Callable[[], set[int]], engine: PolicyEngine) -> None:
    """An incremental update, then the filters of the nodes it reports affected: the join figure."""
    affected = phases.timed(f"{label}: incremental update", action)
    phases.timed(
        f"{label}: filters of {len(affected)} affected nodes",
        lambda: [engine.filter_rules(i) for i in affected],
    )
    phases.total(f"**{label}: total**", 2)


def run(node_count: int, acl_count: int) -> dict[str, Any]:
    rng = random.Random(node_count)
    policy = make_policy(rng, acl_count)
    users = [PolicyUser(u + 1, f"user{u}", f"user{u}@example.com") for u in range(USERS)]
    nodes = [make_node(i, rng) for i in range(1, node_count + 1)]
    title = (
        f"{node_count} nodes, {acl_count} ACLs, {GRANTS} grants, {TEAMS} SSH rules "
        f"({acl_count + GRANTS + TEAMS} rules), {TEAMS} groups, {SERVICES} tags"
    )
    print(f"\n{title}\n\n| phase | wall s | CPU s | of it GC s | full GCs |\n|---|---|---|---|---|")
    phases = Phases()
    prepare_collector()  # the server, before it starts
    engine = phases.timed(
        "parse, validate, resolve aliases, compile grants", lambda: PolicyEngine(policy, users, nodes)
    )
    settle_collector()  # the server, once up; from here on its collector settings hold
    phases.timed("packet filters for every node", lambda: [engine.filter_rules(n.id) for n in nodes])
    phases.total("**full compile**", 2)
    sample = nodes[:: max(1, node_count // 100)]
    phases.timed(f"peers for {len(sample)} nodes", lambda: [engine.peers(n.id) for n in sample])
    phases.timed(f"SSH policies for {len(sample)} nodes", lambda: [engine.ssh_policy(n.id) for n in sample])

    laptop = PolicyNode(
        node_count + 1, "new-laptop", "user7", 8, (), "100.127.255.1", "fd7a:115c:a1e0::ffff:1"
    )
    service = PolicyNode(
        node_count + 2, "new-svc", None, None, ("tag:svc3",), "100.127.255.2", "fd7a:115c:a1e0::ffff:2"
    )
    change(phases, "laptop joins", lambda: engine.add_or_update_node(laptop), engine)
    phases.timed("laptop joins: its own peers", lambda: engine.peers(laptop.id))
    change(phases, "service joins", lambda: engine.add_or_update_node(service), engine)
    retagged = PolicyNode(service.id, service.hostname, None, None, ("tag:svc4",), service.ipv4, service.ipv6)
    change(phases, "service changes tag", lambda: engine.add_or_update_node(retagged), engine)
    change(phases, "laptop leaves", lambda: engine.remove_node(laptop.id), engine)
    reloaded = phases.timed("policy reload: a new engine", lambda: PolicyEngine(policy, users, nodes))
    phases.timed(
        "policy reload: packet filters for every node", lambda: [reloaded.filter_rules(n.id) for n in nodes]
    )
    phases.total("**policy reload**", 2)
    return {
        "nodes": node_count,
        "acls": acl_count,
        "grants": GRANTS,
        "ssh_rules": TEAMS,
        "phases": [
            {"phase": label, "wall_s": wall, "cpu_s": cpu, "gc_cpu_s": collector, "full_gcs": full}
            for label, wall, cpu, collector, full in phases.rows
        ],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("node_counts", nargs="*", type=int, default=[1000, 10000])
    parser.add_argument("--acls", type=int, default=ACLS, help="ACL count (2 fixed ones included)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    results = [run(count, args.acls) for count in args.node_counts]
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
