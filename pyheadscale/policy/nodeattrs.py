"""``nodeAttrs`` and ``randomizeClientPort``: the capabilities a node receives about itself."""

from __future__ import annotations

from typing import Any

from pyheadscale.policy.aliases import Resolver
from pyheadscale.policy.model import Policy
from pyheadscale.policy.types import PolicyNode

RANDOMIZE_CLIENT_PORT = "randomize-client-port"
#: Peers of a node with this attribute reach it over IPv6 only.
DISABLE_IPV4 = "disable-ipv4"
FUNNEL = "funnel"
#: Granting ``funnel`` also tells the client which ports it may expose.
FUNNEL_PORTS = "https://tailscale.com/cap/funnel-ports?ports=443,8443,10000"


def cap_map_for(policy: Policy, resolver: Resolver, node: PolicyNode) -> dict[str, Any]:
    """The node's ``tailcfg.NodeCapMap`` entries produced by the policy (values are ``null``)."""
    caps: dict[str, Any] = {}
    if policy.randomize_client_port:
        caps[RANDOMIZE_CLIENT_PORT] = None
    for entry in policy.node_attrs:
        if not entry.attrs or not node.has_ip_in(resolver.resolve_all(entry.targets)):
            continue
        for attr in entry.attrs:
            caps.setdefault(attr, None)
            if attr == FUNNEL:
                caps.setdefault(FUNNEL_PORTS, None)
    return caps
