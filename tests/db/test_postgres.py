"""The server on PostgreSQL: migrations, registration, and state that survives a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pyheadscale.app import Server
from pyheadscale.client.control import ControlClient
from pyheadscale.config import build_config
from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.ports import free_port


async def test_registration_and_restart_on_postgres(postgres: dict[str, object], tmp_path: Path) -> None:
    port = free_port()
    raw = {
        "server_url": f"http://127.0.0.1:{port}",
        "listen_addr": f"127.0.0.1:{port}",
        "metrics_listen_addr": "",
        "unix_socket": "",
        "derp": {"server": {"enabled": False}},
        "database": {"type": "postgres", "postgres": postgres},
    }
    config = build_config(raw, data_dir=tmp_path)
    server = Server(config)
    await server.start()
    try:
        store = server.store
        assert store is not None
        user = await store.create_user("alice")
        _, key = await store.create_preauth_key(user.id, tags=["tag:server"], reusable=True)
        client = ControlClient(config.server_url, MachinePrivate.generate())
        await client.connect()
        node_key = NodePrivate.generate()
        answer = await client.register(node_key, auth_key=key, hostname="pg-node")
        assert answer["MachineAuthorized"], answer
        stream = client.map_stream(node_key, hostname="pg-node", endpoints=["192.0.2.7:41641"])
        first = await asyncio.wait_for(stream.__anext__(), 10)
        assert first["Node"]["Tags"] == ["tag:server"]
        await stream.aclose()
        await client.close()
        before = {n.id: (n.ipv4, n.ipv6, n.tags, n.endpoints) for n in store.nodes.values()}
    finally:
        await server.stop()

    again = Server(config)
    await again.start()
    try:
        assert again.store is not None
        after = {n.id: (n.ipv4, n.ipv6, n.tags, n.endpoints) for n in again.store.nodes.values()}
        assert after == before and len(after) == 1
        assert again.store.user_by_name("alice") is not None
        assert [k.tags for k in again.store.preauth_keys.values()] == [["tag:server"]]
    finally:
        await again.stop()
