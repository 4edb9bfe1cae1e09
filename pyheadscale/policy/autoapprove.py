"""``autoApprovers``: which advertised routes the policy approves without an administrator."""

from __future__ import annotations

import ipaddress

from pyheadscale.policy.aliases import Alias, AliasKind, Resolver
from pyheadscale.policy.model import Policy
from pyheadscale.policy.types import EXIT_ROUTES, PolicyNode


def approved_routes(policy: Policy, resolver: Resolver, node: PolicyNode) -> list[str]:
    """The node's advertised routes that ``autoApprovers`` approve.

    A subnet route is approved by the approvers of any ``routes`` prefix
    containing it; exit routes (``0.0.0.0/0``, ``::/0``) only by ``exitNode``.
    """
    approved: list[str] = []
    for text in node.routable_ips:
        route = ipaddress.ip_network(text, strict=False)
        if route in EXIT_ROUTES:
            approvers = policy.exit_node_approvers
        else:
            approvers = [
                approver
                for prefix, names in policy.route_approvers.items()
                if prefix.version == route.version and route.subnet_of(prefix)  # type: ignore[arg-type]
                for approver in names
            ]
        if any(_approver_matches(resolver, approver, node) for approver in approvers):
            approved.append(text)
    return approved


def _approver_matches(resolver: Resolver, approver: Alias, node: PolicyNode) -> bool:
    """Tags approve the nodes carrying them; users and groups approve the nodes they own."""
    if approver.kind is AliasKind.TAG:
        return approver.text in node.tags
    if node.is_tagged:
        return False
    user_ids = resolver.user_ids_of(approver)
    return user_ids is not None and resolver.tailnet.node_user_id(node) in user_ids
