"""``policy simulate``: run compatibility cases (the corpus format) through the engine.

A case holds a policy, users and nodes (in registration order); the result
is what each node would receive. Node ids follow registration order, and the
first user is taken as the tailnet owner (every user is an admin), as in the
captured tailnet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyheadscale.policy.engine import PolicyEngine
from pyheadscale.policy.types import PolicyError, PolicyNode, PolicyUser


def case_inputs(case: dict[str, Any]) -> tuple[list[PolicyUser], list[PolicyNode]]:
    users = [PolicyUser(id=int(u["id"]), name=u["name"], email=u.get("email") or "") for u in case["users"]]
    ids_by_name = {u.name: u.id for u in users}
    nodes = [
        PolicyNode(
            id=index,
            hostname=n["hostname"],
            user=n.get("user"),
            user_id=ids_by_name.get(n["user"]) if n.get("user") and not n.get("tags") else None,
            tags=tuple(n.get("tags") or ()),
            ipv4=n.get("ipv4"),
            ipv6=n.get("ipv6"),
            routable_ips=tuple(n.get("routable_ips") or ()),
            approved_routes=tuple(n.get("approved_routes") or ()),
        )
        for index, n in enumerate(case["nodes"], start=1)
    ]
    return users, nodes


def simulate_case(case: dict[str, Any]) -> dict[str, Any]:
    """The engine's answer for one case, in the corpus's output shape."""
    users, nodes = case_inputs(case)
    try:
        engine = PolicyEngine(case["policy"], users, nodes)
    except PolicyError as exc:
        return {"id": case.get("id"), "accepted": False, "error": str(exc), "nodes": {}}
    hostnames = {n.id: n.hostname for n in nodes}
    out: dict[str, Any] = {}
    for node in nodes:
        out[node.hostname] = {
            "packet_filter_rules": engine.filter_rules(node.id),
            "ssh_policy": engine.ssh_policy(node.id),
            "peers": {
                hostnames[peer_id]: {"AllowedIPs": view.allowed_ips, "PrimaryRoutes": view.primary_routes}
                for peer_id, view in engine.peers(node.id).items()
            },
            "cap_map": engine.cap_map(node.id),
        }
    return {"id": case.get("id"), "accepted": True, "error": None, "nodes": out}


def simulate_file(path: Path) -> dict[str, Any]:
    case = json.loads(path.read_text(encoding="utf-8"))
    return simulate_case(case)
