"""Audit log and Prometheus metrics on a live server."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from pyheadscale.client.control import ControlClient
from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.live_server import StartLive
from tests.ports import free_port


async def test_audit_log_tells_a_nodes_life_and_never_holds_a_secret(start_live: StartLive) -> None:
    live = await start_live()
    server = live.server
    assert server.store is not None
    store = server.store
    user = await store.create_user("alice")
    _, key = await store.create_preauth_key(user.id)
    client = ControlClient(server.config.server_url, MachinePrivate.generate())
    await client.connect()
    try:
        refused = await client.register(NodePrivate.generate(), auth_key=key[:-4] + "0000")
        assert refused["Error"] == "invalid authkey"
        accepted = await client.register(NodePrivate.generate(), auth_key=key, hostname="laptop")
        assert accepted["MachineAuthorized"]
    finally:
        await client.close()
    node = next(iter(store.nodes.values()))
    await store.set_tags(node.id, ["tag:server"])
    await store.delete_node(node.id)
    await server.audit.close()

    story = [(e["action"], e["outcome"]) for e in server.audit.query()]
    assert story == [
        ("user.create", "success"),
        ("preauthkey.create", "success"),
        ("node.register", "denied"),
        ("node.register", "success"),
        ("node.tag", "success"),
        ("node.delete", "success"),
    ]
    register = server.audit.query(action="node.register")[-1]
    assert register["actor"].startswith("machine:")
    assert register["target"] == f"node:{node.id}"

    written = (live.data_dir / "audit.log").read_text()
    assert [json.loads(line)["action"] for line in written.splitlines()] == [a for a, _ in story]
    secret = key.rsplit("-", 1)[1]
    assert secret not in written and key not in written


async def test_metrics_endpoint_counts_nodes_streams_and_maps(start_live: StartLive) -> None:
    port = free_port()
    live = await start_live(metrics_listen_addr=f"127.0.0.1:{port}")
    node = await live.node()
    client, node_key = node.client, node.node_key
    try:
        stream = client.map_stream(node_key)
        first = await asyncio.wait_for(stream.__anext__(), 10)
        assert "Node" in first
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            text = await resp.text()
    finally:
        await client.close()
    values = {
        # Label values may hold spaces (Headscale's endpoint="GET /key"): the value is after the last one.
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["pyheadscale_nodes"] == 1
    assert values["pyheadscale_nodes_online"] == 1
    assert values["pyheadscale_map_streams"] == 1
    assert values['pyheadscale_registrations_total{outcome="ok"}'] == 1
    assert values['pyheadscale_map_messages_total{kind="full"}'] >= 1
    assert values["pyheadscale_map_bytes_total"] > 0
    assert any(k.startswith('pyheadscale_http_request_seconds_count{path="/key"') for k in values)
