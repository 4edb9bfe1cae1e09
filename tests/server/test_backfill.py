"""Backfilling addresses after a family is added to the configuration."""

from __future__ import annotations

from pathlib import Path

from tests.live_server import StartLive


async def test_enabling_ipv6_then_backfilling_gives_existing_nodes_an_ipv6(
    start_live: StartLive, tmp_path: Path
) -> None:
    v4_only = (await start_live(data_dir=tmp_path, prefixes={"v4": "100.64.0.0/10", "v6": ""})).server
    assert v4_only.store is not None
    user = await v4_only.store.create_user("alice")
    node = await v4_only.store.register(
        machine_key="mkey:" + "11" * 32,
        node_key="nodekey:" + "22" * 32,
        hostinfo={"Hostname": "old"},
        user_id=user.id,
        tags=[],
        method="cli",
        ephemeral=False,
        expiry=None,
    )
    assert node.ipv6 is None
    await v4_only.stop()

    dual = (await start_live(data_dir=tmp_path)).server
    assert dual.store is not None
    changes = await dual.store.backfill_ips()
    after = dual.store.get_node(node.id)
    assert after.ipv4 == node.ipv4, "existing addresses are kept"
    v6 = dual.store.ips.v6
    assert v6 is not None, "the dual-stack server has an IPv6 allocator"
    assert after.ipv6 is not None and after.ipv6 in v6.prefix
    assert changes == [f"node {node.id} (old): added {after.ipv6}"]
    assert await dual.store.backfill_ips() == [], "nothing left to do the second time"
    assert [e["action"] for e in dual.audit.query(action="node.backfill_ips")] == ["node.backfill_ips"]
