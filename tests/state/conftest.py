"""A store and a policy manager on a throwaway SQLite database, no server, with everything the feed
delivers recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pyheadscale.config import Config, build_config
from pyheadscale.db.database import Database
from pyheadscale.state.changes import Change, ChangeKind
from pyheadscale.state.ipalloc import IPAllocator
from pyheadscale.state.models import Node
from pyheadscale.state.policy import PolicyManager
from pyheadscale.state.store import Store

ROUTES = ["10.1.0.0/16", "192.168.7.0/24"]
AUTO_APPROVED = ["10.1.0.0/16"]
POLICY = {
    "acls": [{"action": "accept", "src": ["alice@"], "dst": ["alice@:*"]}],
    "autoApprovers": {"routes": {"10.0.0.0/8": ["alice@"]}},
}


@dataclass
class Tailnet:
    config: Config
    db_path: Path
    store: Store
    policy: PolicyManager
    seen: list[Change] = field(default_factory=list)
    # At each delivery: was every route the policy auto-approves already approved in the store?
    caught_up: list[bool] = field(default_factory=list)

    def watch(self, change: Change) -> None:
        self.seen.append(change)
        self.caught_up.append(
            all(
                set(self.policy.auto_approved_routes(node)) <= set(node.approved_routes)
                for node in self.store.nodes.values()
            )
        )

    def kinds(self) -> list[tuple[ChangeKind, int | None]]:
        return [(c.kind, c.node_id) for c in self.seen]

    async def node(self, hostname: str, routes: list[str] | None = None) -> Node:
        user = self.store.user_by_name("alice") or await self.store.create_user("alice")
        hostinfo: dict[str, Any] = {"Hostname": hostname}
        if routes:
            hostinfo["RoutableIPs"] = routes
        return await self.store.register(
            machine_key=f"mkey:{hostname}",
            node_key=f"nodekey:{hostname}",
            hostinfo=hostinfo,
            user_id=user.id,
            tags=[],
            method="cli",
            ephemeral=False,
            expiry=None,
        )


@pytest.fixture
async def tailnet(tmp_path: Path) -> AsyncIterator[Tailnet]:
    config = build_config({"server_url": "http://127.0.0.1:1"}, data_dir=tmp_path)
    db = await Database.open_url(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    store = Store(db, IPAllocator("100.64.0.0/10", "fd7a:115c:a1e0::/48", "sequential"))
    await store.load()
    policy = PolicyManager(config, store)
    await policy.start()
    store.attach_policy(policy)
    net = Tailnet(config, tmp_path / "db.sqlite", store, policy)
    store.feed.subscribe(net.watch)
    try:
        yield net
    finally:
        await store.close()
        await db.close()
