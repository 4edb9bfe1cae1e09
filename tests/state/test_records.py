"""Records are frozen and replaced whole on every change; what the store hands out is read-only."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pyheadscale.db.database import Database
from pyheadscale.derpmap import DERPMapSource
from pyheadscale.mapper.builder import MapBuilder, MapContext
from pyheadscale.state.changes import ChangeKind
from pyheadscale.state.ipalloc import IPAllocator
from pyheadscale.state.store import Store
from tests.state.conftest import Tailnet


async def test_going_offline_replaces_the_record_and_persists_last_seen(tailnet: Tailnet) -> None:
    """The map builder caches a peer's rendering by record identity: the record a node had while online must
    stay as it was, and its peers must see the new LastSeen rather than a cached entry."""
    store = tailnet.store
    a, b = await tailnet.node("a"), await tailnet.node("b")
    builder = MapBuilder(
        MapContext(tailnet.config, store, tailnet.policy, DERPMapSource(tailnet.config).current)
    )
    store.connected(b.id)
    online = store.nodes[b.id]
    peer = tailnet.policy.peer_view(a.id, b.id)
    assert peer is not None
    assert "LastSeen" not in builder.tail_node(online, peer, 130)
    before = online.last_seen
    assert before is not None
    tailnet.seen.clear()
    await store.disconnected(b.id)
    offline = store.nodes[b.id]
    assert offline is not online and online.last_seen == before  # replaced, not changed in place
    assert offline.last_seen is not None and offline.last_seen >= before
    assert [c.kind for c in tailnet.seen] == [ChangeKind.NODE_ONLINE] and not store.is_online(b.id)
    entry = builder.tail_node(offline, peer, 130)
    assert entry["Online"] is False
    assert datetime.fromisoformat(entry["LastSeen"].replace("Z", "+00:00")) == offline.last_seen
    # and the database has it: a restarted server shows the same LastSeen
    db = await Database.open_url(f"sqlite+aiosqlite:///{tailnet.db_path}")
    try:
        reloaded = Store(db, IPAllocator("100.64.0.0/10", "fd7a:115c:a1e0::/48", "sequential"))
        await reloaded.load()
        assert reloaded.nodes[b.id].last_seen == offline.last_seen
    finally:
        await db.close()


async def test_records_and_the_mappings_of_them_are_read_only(tailnet: Tailnet) -> None:
    store = tailnet.store
    node = await tailnet.node("a")
    user = store.get_user(node.user_id or 0)
    key, _ = await store.create_preauth_key(user.id)
    api_key, _ = await store.create_api_key(datetime.now(UTC) + timedelta(days=1))
    for record, attribute in ((node, "last_seen"), (user, "name"), (key, "used"), (api_key, "expiration")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, attribute, None)
    mappings: list[Any] = [store.nodes, store.users, store.preauth_keys, store.api_keys]
    for mapping in mappings:
        with pytest.raises(TypeError):
            mapping[999] = None
    renamed = await store.rename_node(node.id, "renamed")
    assert renamed is store.nodes[node.id] and node.given_name == "a"  # the old record is as it was
