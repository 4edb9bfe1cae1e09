"""What the policy adds to a state mutation, asked by the store while the mutation is still running.

A node's record decides what the policy makes of it (its routes auto-approved, the filters that name it),
and those consequences are part of the same mutation: the routes approved before the record is written, the
engine told before the mutation's changes are published. So no reader ever sees a node the policy has not
caught up with, and nothing downstream has to write state back. `PolicyManager` (state/policy.py) is the
implementation; `NoPolicy` stands in until one is attached (tools that only load and edit the database).
"""

from __future__ import annotations

from typing import Protocol

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
