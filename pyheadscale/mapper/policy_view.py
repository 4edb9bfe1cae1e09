"""What the mapper needs from the policy engine, per node.

The mapper never evaluates policy itself: it asks for a node's peers (with the addresses to route to each), its
packet filter, its SSH policy and its capabilities. `OpenTailnet` answers for a tailnet with no policy: everyone sees
everyone and every packet is allowed, which is Tailscale's behaviour without an ACL.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Protocol

from pyheadscale.state.models import Node

EXIT_ROUTES = frozenset({"0.0.0.0/0", "::/0"})
ALLOW_ALL_FILTER: list[dict[str, Any]] = [
    {"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}
]


@dataclass(frozen=True, slots=True)
class Peer:
    allowed_ips: list[str] = field(default_factory=list)
    primary_routes: list[str] = field(default_factory=list)


class NetworkPolicy(Protocol):
    def peers(self, node_id: int) -> dict[int, Peer]: ...

    def filter_rules(self, node_id: int) -> list[dict[str, Any]]: ...

    def ssh_policy(self, node_id: int) -> dict[str, Any] | None: ...

    def cap_map(self, node_id: int) -> dict[str, Any]: ...


def served_routes(node: Node) -> list[str]:
    """Routes a node both announces and has approved."""
    announced = {str(ipaddress.ip_network(r, strict=False)) for r in node.announced_routes}
    return sorted(r for r in node.approved_routes if r in announced)


class OpenTailnet:
    """No policy: all nodes see each other; the primary for a subnet is its earliest-registered router."""

    def __init__(self, nodes: dict[int, Node]) -> None:
        self._nodes = nodes

    def _primaries(self) -> dict[str, int]:
        owner: dict[str, int] = {}
        for node_id in sorted(self._nodes):
            for route in served_routes(self._nodes[node_id]):
                if route not in EXIT_ROUTES:
                    owner.setdefault(route, node_id)
        return owner

    def peers(self, node_id: int) -> dict[int, Peer]:
        primaries = self._primaries()
        out = {}
        for peer_id, peer in self._nodes.items():
            if peer_id == node_id:
                continue
            primary = [r for r, owner in primaries.items() if owner == peer_id]
            exits = [r for r in served_routes(peer) if r in EXIT_ROUTES]
            out[peer_id] = Peer(peer.addresses() + primary + exits, primary)
        return out

    def filter_rules(self, node_id: int) -> list[dict[str, Any]]:
        return ALLOW_ALL_FILTER

    def ssh_policy(self, node_id: int) -> dict[str, Any] | None:
        return None

    def cap_map(self, node_id: int) -> dict[str, Any]:
        return {}
