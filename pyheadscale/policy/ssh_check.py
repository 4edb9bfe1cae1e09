"""The check period that applies to an SSH connection from one node to another under ``check`` rules.

The SSH action endpoint asks this of the policy in force instead of trusting anything in the URL the client
follows, which the client (or whoever holds its keys) could rewrite. The first ``check`` rule whose ``src``
holds the source node and whose ``dst`` holds the destination decides, as Headscale decides.
"""

from __future__ import annotations

from datetime import timedelta

from pyheadscale.policy.aliases import Autogroup
from pyheadscale.policy.engine import PolicyEngine

#: Tailscale's default when a ``check`` rule names no ``checkPeriod``.
DEFAULT_CHECK_PERIOD = timedelta(hours=12)


def ssh_check_period(engine: PolicyEngine, src_id: int, dst_id: int) -> timedelta | None:
    """How long a check approval of ``src_id`` -> ``dst_id`` holds; None when no ``check`` rule covers the
    pair. ``timedelta(0)`` is ``checkPeriod: "always"``: every connection is checked."""
    policy = engine.policy
    src, dst = engine.tailnet.nodes.get(src_id), engine.tailnet.nodes.get(dst_id)
    if policy is None or src is None or dst is None:
        return None
    tailnet, resolver = engine.tailnet, engine.resolver
    for rule in policy.ssh:
        if rule.action != "check" or not src.has_ip_in(resolver.resolve_all(rule.sources)):
            continue
        for alias in rule.destinations:
            if alias.is_autogroup(Autogroup.SELF):
                owner = tailnet.node_user_id(src)
                matched = (
                    not src.is_tagged
                    and not dst.is_tagged
                    and owner is not None
                    and owner == tailnet.node_user_id(dst)
                )
            else:
                matched = dst.has_ip_in(resolver.resolve_all([alias]))
            if matched:
                if rule.check_period_always:
                    return timedelta(0)
                return rule.check_period if rule.check_period is not None else DEFAULT_CHECK_PERIOD
    return None
