"""What the policy adds to a state mutation, asked by the store while the mutation is still running.

A node's record decides what the policy makes of it (its routes auto-approved, the filters that name it),
and those consequences are part of the same mutation: the routes approved before the record is written, the
engine told before the mutation's changes are published. So no reader ever sees a node the policy has not
caught up with, and nothing downstream has to write state back. `PolicyManager` (state/policy.py) is the
implementation; `NoPolicy` stands in until one is attached (tools that only load and edit the database).
`PolicyEffects` is what the store's mutations call.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Protocol

from pyheadscale.audit import AuditLog
from pyheadscale.state.changes import Change, ChangeKind
from pyheadscale.state.models import Node


class PolicyConsequences(Protocol):
    def auto_approved_routes(self, node: Node) -> list[str]:
        """The node's announced routes the policy's autoApprovers approve for it."""
        ...

    def node_changed(self, node: Node) -> set[int]:
        """Take in the node as it now is; returns the other nodes whose policy results changed."""
        ...

    def node_removed(self, node_id: int) -> set[int]:
        """Forget the node; returns the remaining nodes whose policy results changed."""
        ...

    def users_changed(self) -> None:
        """Take in the users as they now are (a full recompile of who is who)."""
        ...

    def presence_changed(self, node_id: int) -> set[int]:
        """The node came online or went offline; returns the routers whose primary routes moved."""
        ...


class PolicyCandidate(Protocol):
    """A policy compiled against the tailnet, not yet in force."""

    def auto_approved_routes(self, node: Node) -> list[str]:
        """The node's announced routes this policy's autoApprovers approve for it."""
        ...

    def install(self) -> None:
        """Put this policy in force in place of the old one."""
        ...


class NoPolicy:
    """No policy attached: nothing is auto-approved, and no node's results depend on another."""

    def auto_approved_routes(self, node: Node) -> list[str]:
        return []

    def node_changed(self, node: Node) -> set[int]:
        return set()

    def node_removed(self, node_id: int) -> set[int]:
        return set()

    def users_changed(self) -> None:
        return None

    def presence_changed(self, node_id: int) -> set[int]:
        return set()


class PolicyEffects:
    """The consequences of the attached policy, as a mutation needs them: node records with the routes it
    auto-approves, and the changes written records cause, in causal order."""

    def __init__(self, audit_log: AuditLog) -> None:
        self.audit = audit_log
        self.policy: PolicyConsequences = NoPolicy()

    def approvals(self, node: Node, auto_approved: Iterable[str]) -> list[str] | None:
        """The node's approved routes with `auto_approved` added; None when they add nothing."""
        missing = set(auto_approved) - set(node.approved_routes)
        return sorted(missing | set(node.approved_routes)) if missing else None

    def approved(self, node: Node) -> Node:
        """The record with the announced routes the policy's autoApprovers cover approved too."""
        routes = self.approvals(node, self.policy.auto_approved_routes(node))
        return node if routes is None else replace(node, approved_routes=routes)

    def audit_approval(self, node: Node) -> None:
        self.audit.record("node.approve_routes", f"node:{node.id}", routes=node.approved_routes)

    def nodes_written(
        self, nodes: Sequence[Node], kind: ChangeKind = ChangeKind.NODE_UPDATED
    ) -> list[Change]:
        """Tell the policy about nodes just written; the changes they cause: each node, then the nodes whose
        policy results it changed."""
        changes: list[Change] = []
        for node in nodes:
            changes.append(Change(kind, node.id))
            changes.extend(_policy_nodes(self.policy.node_changed(node)))
        return changes

    def node_removed(self, node_id: int) -> list[Change]:
        return [Change(ChangeKind.NODE_REMOVED, node_id), *_policy_nodes(self.policy.node_removed(node_id))]

    def users_changed(self) -> list[Change]:
        self.policy.users_changed()
        return [Change(ChangeKind.USERS)]

    def presence_changed(self, node_id: int) -> list[Change]:
        """The node came online or went offline; then the routers whose primary routes that moved."""
        moved = self.policy.presence_changed(node_id)
        return [Change(ChangeKind.NODE_ONLINE, node_id)] + [
            Change(ChangeKind.NODE_UPDATED, router_id) for router_id in sorted(moved)
        ]


def _policy_nodes(affected: set[int]) -> list[Change]:
    return [Change(ChangeKind.POLICY_NODES, node_ids=frozenset(affected))] if affected else []
