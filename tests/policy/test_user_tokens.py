"""User tokens cannot be borrowed: an email-shaped token names a user only by a trusted email, a provider
identity or an operator-chosen name, and a token naming two users grants nothing, in every part of a policy.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pyheadscale.policy import PolicyEngine, PolicyError, PolicyNode, PolicyUser

ALICE = PolicyUser(1, "alice", "alice@example.com")
# An OIDC user who chose "alice@example.com" as preferred_username at the identity provider.
BOB_AS_ALICE = PolicyUser(
    2, "alice@example.com", "bob@other.org", "https://id.example.com/bob", name_from_provider=True
)
# An operator's second user with the same email address as alice.
ALICE_AGAIN = PolicyUser(3, "alice2", "alice@example.com")


def node(node_id: int, user_id: int | None, tags: tuple[str, ...] = (), **routes: Any) -> PolicyNode:
    return PolicyNode(
        id=node_id,
        hostname=f"n{node_id}",
        user=None,
        user_id=user_id,
        tags=tags,
        ipv4=f"100.64.0.{node_id}",
        ipv6=f"fd7a:115c:a1e0::{node_id:x}",
        **routes,
    )


NODES = [node(1, 1), node(2, 2), node(3, 3), node(10, None, ("tag:server",))]


def sources(engine: PolicyEngine, node_id: int) -> set[str]:
    return {src for rule in engine.filter_rules(node_id) for src in rule.get("SrcIPs", [])}


def policy(**parts: Any) -> str:
    return json.dumps({"tagOwners": {"tag:server": ["alice@example.com"]}, **parts})


ALICE_TO_SERVER = policy(acls=[{"action": "accept", "src": ["alice@example.com"], "dst": ["tag:server:*"]}])


def test_a_name_chosen_at_the_provider_does_not_match_an_email_token() -> None:
    engine = PolicyEngine(ALICE_TO_SERVER, [ALICE, BOB_AS_ALICE], NODES[:2] + NODES[3:])
    assert "100.64.0.1" in sources(engine, 10)
    assert "100.64.0.2" not in sources(engine, 10), "bob's self-chosen name borrowed alice's identity"


def test_operator_names_and_provider_identities_still_match() -> None:
    operator_named = PolicyUser(4, "carol@example.com")
    text = policy(
        acls=[
            {"action": "accept", "src": ["carol@example.com"], "dst": ["tag:server:*"]},
            {"action": "accept", "src": ["https://id.example.com/bob@"], "dst": ["tag:server:*"]},
            {"action": "accept", "src": ["alice@"], "dst": ["tag:server:*"]},
        ]
    )
    nodes = [node(1, 1), node(2, 2), node(4, 4), NODES[3]]
    engine = PolicyEngine(text, [ALICE, BOB_AS_ALICE, operator_named], nodes)
    assert {"100.64.0.1", "100.64.0.2", "100.64.0.4"} <= sources(engine, 10)


@pytest.mark.parametrize(
    "parts",
    [
        {"acls": [{"action": "accept", "src": ["alice@example.com"], "dst": ["*:*"]}]},
        {"acls": [{"action": "accept", "src": ["*"], "dst": ["alice@example.com:22"]}]},
        {"grants": [{"src": ["alice@example.com"], "dst": ["*"], "ip": ["*"]}]},
        {"groups": {"group:eng": ["alice@example.com"]}},
        {
            "ssh": [
                {
                    "action": "accept",
                    "src": ["alice@example.com"],
                    "dst": ["alice@example.com"],
                    "users": ["root"],
                }
            ]
        },
        {"tagOwners": {"tag:server": ["alice@example.com"]}},
        {"autoApprovers": {"routes": {"10.0.0.0/8": ["alice@example.com"]}}},
        {"autoApprovers": {"exitNode": ["alice@example.com"]}},
        {"nodeAttrs": [{"target": ["alice@example.com"], "attr": ["funnel"]}]},
    ],
    ids=["acl-src", "acl-dst", "grant", "group", "ssh", "tagOwners", "routes", "exitNode", "nodeAttrs"],
)
def test_an_ambiguous_token_is_refused_when_the_policy_loads(parts: dict[str, Any]) -> None:
    text = json.dumps({"tagOwners": {"tag:server": []}, **parts})
    with pytest.raises(PolicyError, match=re.escape('multiple users found: token "alice@example.com"')):
        PolicyEngine(text, [ALICE, ALICE_AGAIN], NODES[:1] + NODES[2:3])


def ssh_principals(engine: PolicyEngine, node_id: int) -> set[str]:
    policy = engine.ssh_policy(node_id)
    rules = policy["rules"] if policy is not None else []
    return {p.get("nodeIP", "") for rule in rules for p in rule["principals"]}


def test_a_token_made_ambiguous_by_a_user_change_grants_nothing() -> None:
    text = policy(
        groups={"group:ops": ["alice@example.com"]},
        acls=[
            {"action": "accept", "src": ["alice@example.com"], "dst": ["tag:server:*"]},
            {"action": "accept", "src": ["group:ops"], "dst": ["tag:server:22"]},
        ],
        ssh=[{"action": "accept", "src": ["alice@example.com"], "dst": ["tag:server"], "users": ["root"]}],
        autoApprovers={"routes": {"10.0.0.0/8": ["alice@example.com"]}},
    )
    router = node(1, 1, routable_ips=["10.1.0.0/16"])
    engine = PolicyEngine(text, [ALICE], [router, NODES[3]])
    assert "100.64.0.1" in sources(engine, 10)
    assert "100.64.0.1" in ssh_principals(engine, 10)
    assert engine.auto_approved_routes(router) == ["10.1.0.0/16"]
    assert engine.ambiguous_user_tokens() == []

    engine.set_nodes([ALICE, ALICE_AGAIN], [router, node(3, 3), NODES[3]])
    assert engine.ambiguous_user_tokens() == ["alice@example.com"]
    assert not {"100.64.0.1", "100.64.0.3"} & sources(engine, 10), "neither match gets the ACL or group grant"
    assert not {"100.64.0.1", "100.64.0.3"} & ssh_principals(engine, 10), "nor SSH"
    assert engine.auto_approved_routes(router) == [], "nor route approval"
