"""The policy in force: keeps the policy engine in step with the store and swaps policies safely.

The store asks this, inside each mutation, what the policy makes of a node (state/consequences.py): which of
its routes are auto-approved, whose filters it changes. So by the time a mutation's changes are published the
engine already knows the node that changed, and nothing here reacts to the change feed. A new policy is
compiled against the current tailnet, as a store mutation, before it replaces the old one: a policy that does
not compile is refused with the engine's message and the old one stays in force.

In `file` mode the file is watched (modification time and size) and re-read on SIGHUP; in `database` mode the
newest stored policy is in force and `set_policy` stores a new one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyheadscale.background import stop_task
from pyheadscale.config import Config
from pyheadscale.policy import PolicyEngine, PolicyError, PolicyNode, PolicyUser
from pyheadscale.policy.peers import RouterHealth
from pyheadscale.policy.types import PeerView
from pyheadscale.state.changes import Change, ChangeKind
from pyheadscale.state.models import Node
from pyheadscale.state.store import Store
from pyheadscale.tailcfg.filter import FilterRule
from pyheadscale.tailcfg.ssh import SSHPolicy

log = logging.getLogger(__name__)

FILE_POLL_SECONDS = 2.0


def policy_node(store: Store, node: Node) -> PolicyNode:
    user = store.users.get(node.user_id) if node.user_id is not None and not node.tags else None
    return PolicyNode(
        id=node.id,
        hostname=node.hostname,
        user=user.name if user else None,
        user_id=user.id if user else None,
        tags=node.tags,
        ipv4=str(node.ipv4) if node.ipv4 else None,
        ipv6=str(node.ipv6) if node.ipv6 else None,
        routable_ips=node.announced_routes,
        approved_routes=node.approved_routes,
    )


class PolicyManager:
    """Owns the PolicyEngine; answers the mapper's per-node questions and the store's (PolicyConsequences)."""

    def __init__(self, config: Config, store: Store, router_health: RouterHealth | None = None) -> None:
        """`router_health` makes primary routers online, answering ones (the server's); without it the
        policy alone decides, as for a tailnet at rest."""
        self.config = config
        self.store = store
        self.router_health = router_health
        self.text: str | None = None
        self.updated_at: datetime | None = None
        self.engine = self._compile(None)
        self._file_stamp: tuple[float, int] | None = None
        self._task: asyncio.Task[None] | None = None
        # User tokens of the policy in force that match several users (reported once each).
        self.ambiguous: list[str] = []

    # ---- what the mapper asks ----

    def peers(self, node_id: int) -> dict[int, PeerView]:
        return self.engine.peers(node_id) if node_id in self.store.nodes else {}

    def peer_ids(self, node_id: int) -> set[int]:
        return self.engine.peer_ids(node_id) if node_id in self.store.nodes else set()

    def peer_view(self, node_id: int, peer_id: int) -> PeerView | None:
        return self.engine.peer_view(node_id, peer_id) if node_id in self.store.nodes else None

    def filter_rules(self, node_id: int) -> list[FilterRule]:
        return self.engine.filter_rules(node_id)

    def ssh_policy(self, node_id: int) -> SSHPolicy | None:
        return self.engine.ssh_policy(node_id)

    def cap_map(self, node_id: int) -> dict[str, Any]:
        return self.engine.cap_map(node_id)

    # ---- loading and swapping ----

    def _users(self) -> list[PolicyUser]:
        return [
            PolicyUser(u.id, u.name, u.email, u.provider_id, name_from_provider=u.provider == "oidc")
            for u in self.store.users.values()
        ]

    def _nodes(self) -> list[PolicyNode]:
        return [policy_node(self.store, n) for n in sorted(self.store.nodes.values(), key=lambda n: n.id)]

    def _compile(self, text: str | None) -> PolicyEngine:
        current = getattr(self, "engine", None)
        return PolicyEngine(
            text,
            self._users(),
            self._nodes(),
            server_url=self.config.server_url,
            router_health=self.router_health,
            primaries=current.primaries if current is not None else None,
        )

    def check(self, text: str) -> None:
        """Raise PolicyError if `text` would not be accepted against the current tailnet."""
        self._compile(text)

    async def apply(self, text: str | None) -> None:
        """Compile and put `text` in force with the routes it auto-approves approved (one store mutation), or
        raise PolicyError and leave the old policy in force."""

        def compile_policy() -> _Candidate:
            try:
                return _Candidate(self, self._compile(text), text)
            except PolicyError as exc:
                self.store.audit.record("policy.update", "policy", "refused", reason=str(exc))
                raise

        await self.store.change_policy(compile_policy)

    def _put_in_force(self, engine: PolicyEngine, text: str | None) -> None:
        self.engine, self.text = engine, text
        self.updated_at = datetime.now(UTC)
        self.store.audit.record("policy.update", "policy", size=len(text) if text else 0)
        log.info("policy in force: %s", "none (allow all)" if text is None else f"{len(text)} bytes")

    async def start(self) -> None:
        if self.config.policy.mode == "database":
            text = await self.store.db.latest_policy()
            self._apply_initial(text, "database")
        elif self.config.policy.path:
            path = self.config.path(self.config.policy.path)
            text = await asyncio.to_thread(path.read_text)
            self._file_stamp = await asyncio.to_thread(_stamp, path)
            self._apply_initial(text, str(path))
            self._task = asyncio.get_running_loop().create_task(self._watch_file(path))

    def _apply_initial(self, text: str | None, source: str) -> None:
        try:
            self.engine = self._compile(text)
            self.text = text
            self.updated_at = datetime.now(UTC)
        except PolicyError as exc:
            raise PolicyError(f"policy from {source} is invalid: {exc}") from None

    async def set_policy(self, text: str) -> None:
        """Database mode: validate, store, then put in force."""
        if self.config.policy.mode != "database":
            raise PolicyError(
                "policy.mode is 'file': edit the policy file instead of setting it through the API"
            )
        self.check(text)
        await self.store.db.save_policy(text)
        await self.apply(text)

    async def reload(self) -> bool:
        """Re-read the policy file (file mode). Returns whether a new policy is in force."""
        if self.config.policy.mode != "file" or not self.config.policy.path:
            return False
        path = self.config.path(self.config.policy.path)
        try:
            text = await asyncio.to_thread(path.read_text)
        except OSError as exc:
            log.error("policy reload: cannot read %s (%s); the previous policy stays in force", path, exc)
            return False
        if text == self.text:
            return False
        try:
            await self.apply(text)
        except PolicyError as exc:
            log.error("policy reload: %s is invalid, the previous policy stays in force: %s", path, exc)
            return False
        return True

    async def _watch_file(self, path: Path) -> None:
        while True:
            await asyncio.sleep(FILE_POLL_SECONDS)
            stamp = await asyncio.to_thread(_stamp, path)
            if stamp != self._file_stamp:
                self._file_stamp = stamp
                await self.reload()

    # ---- what the store asks, inside its mutations (PolicyConsequences) ----

    def auto_approved_routes(self, node: Node) -> list[str]:
        return self.engine.auto_approved_routes(policy_node(self.store, node))

    def node_changed(self, node: Node) -> set[int]:
        return self.engine.add_or_update_node(policy_node(self.store, node))

    def node_removed(self, node_id: int) -> set[int]:
        return self.engine.remove_node(node_id)

    def users_changed(self) -> None:
        self.engine.set_nodes(self._users(), self._nodes())
        self._report_ambiguous()

    def presence_changed(self, node_id: int) -> set[int]:
        router = self.engine.tailnet.nodes.get(node_id)
        return self._elect() if router is not None and router.subnet_routes else set()

    # ---- primary routers ----

    def reelect(self) -> None:
        """Elect primary routers again after routers changed health (the HA prober's verdict); the peers of
        each router whose primary routes moved learn its new PrimaryRoutes and AllowedIPs as a node update."""
        moved = self._elect()
        self.store.feed.publish([Change(ChangeKind.NODE_UPDATED, router_id) for router_id in sorted(moved)])

    def _elect(self) -> set[int]:
        """Elect primary routers again; returns the routers whose primary routes moved."""
        moved = self.engine.reelect_primaries()
        for router_id in sorted(moved):
            log.info(
                "primary routes moved: node %d now primary for %s",
                router_id,
                self.primary_routes_of(router_id),
            )
        return moved

    def primary_routes_of(self, node_id: int) -> list[str]:
        return sorted(str(r) for r, owner in self.engine.primaries.items() if owner == node_id)

    def _report_ambiguous(self) -> None:
        """A user change can make a policy token match two users; it then grants nothing (fails closed), and
        the operator is told which token to make unique."""
        ambiguous = self.engine.ambiguous_user_tokens()
        for token in set(ambiguous) - set(self.ambiguous):
            log.error("policy token %r matches several users and grants nothing until it is unique", token)
            self.store.audit.record("policy.ambiguous", "policy", "refused", token=token)
        self.ambiguous = ambiguous

    async def close(self) -> None:
        await stop_task(self._task)


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A compiled policy waiting for the store to put it in force (state/consequences.py: PolicyCandidate)."""

    manager: PolicyManager
    engine: PolicyEngine
    text: str | None

    def auto_approved_routes(self, node: Node) -> list[str]:
        return self.engine.auto_approved_routes(policy_node(self.manager.store, node))

    def install(self) -> None:
        # Routers may have come or gone while the approvals were written (presence is not a queued
        # mutation): elect again, as the engine in force would have. The POLICY change refreshes every map.
        self.engine.reelect_primaries()
        self.manager._put_in_force(self.engine, self.text)


def _stamp(path: Path) -> tuple[float, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime, stat.st_size
