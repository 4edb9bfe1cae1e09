"""Who may give a node a tag: the users `tagOwners` names for it (directly, by group, by e-mail domain).

Asked when a user approves a machine that asked for tags at login (`tailscale up --advertise-tags` without an
auth key). A tag the policy does not list, or any tag without a policy, is refused: a tag that nobody owns
would let anyone put their machine among the tagged devices.
"""

from __future__ import annotations

from collections.abc import Iterable

from pyheadscale.policy.aliases import AliasSyntaxError, parse_alias
from pyheadscale.policy.engine import PolicyEngine


def tags_not_owned(engine: PolicyEngine, user_id: int, tags: Iterable[str]) -> list[str]:
    """The tags in `tags` that `user_id` may not give a node, in the order asked."""
    policy = engine.policy
    refused = []
    for tag in tags:
        owners = policy.tag_owners.get(tag) if policy is not None else None
        if owners is None or not any(_owns(engine, owner, user_id) for owner in owners):
            refused.append(tag)
    return refused


def _owns(engine: PolicyEngine, owner: str, user_id: int) -> bool:
    try:
        alias = parse_alias(owner)
    except AliasSyntaxError:
        return False
    user_ids = engine.resolver.user_ids_of(alias)
    return user_ids is not None and user_id in user_ids
