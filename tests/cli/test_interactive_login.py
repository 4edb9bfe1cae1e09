"""Interactive login end to end: a keyless client waits on its AuthURL while the operator approves it."""

from __future__ import annotations

import asyncio

import aiohttp

from pyheadscale.client.control import ControlClient
from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.cli.conftest import RunCli
from tests.live_server import LiveServer


async def start_login(live: LiveServer) -> tuple[ControlClient, NodePrivate, str]:
    client = ControlClient(live.url, MachinePrivate.generate())
    await client.connect()
    node_key = NodePrivate.generate()
    first = await client.register(node_key, hostname="laptop")
    assert not first["MachineAuthorized"]
    assert first["AuthURL"].startswith(f"{live.url}/register/hskey-authreq-"), first
    return client, node_key, first["AuthURL"]


async def test_cli_approval_lets_the_waiting_client_in(live: LiveServer, cli: RunCli) -> None:
    await live.store.create_user("alice")
    client, node_key, auth_url = await start_login(live)
    auth_id = auth_url.rsplit("/", 1)[1]
    try:
        async with aiohttp.ClientSession() as http, http.get(auth_url) as page:
            text = await page.text()
        assert page.status == 200
        assert f"pyheadscale auth register --auth-id {auth_id} --user USERNAME" in text
        assert "laptop" in text

        waiting = asyncio.ensure_future(client.register(node_key, hostname="laptop", followup=auth_url))
        await asyncio.sleep(0.2)
        assert not waiting.done(), "the follow-up must wait for the operator"

        listed = await cli("auth", "list", "-o", "json")
        assert [p["authId"] for p in listed.json()] == [auth_id]
        result = await cli("auth", "register", "--auth-id", auth_id, "--user", "alice", "-o", "json")
        assert result.code == 0, result.err
        assert result.json()["given_name"] == "laptop"

        answer = await asyncio.wait_for(waiting, 5)
        assert answer["MachineAuthorized"] and answer["Login"]["LoginName"] == "alice"
        node = live.store.node_by_machine_key(client.machine_key_text)
        assert node is not None and node.register_method == "cli"
        stream = client.map_stream(node_key, hostname="laptop")
        first = await asyncio.wait_for(stream.__anext__(), 5)
        assert first["Node"]["ID"] == node.id
    finally:
        await client.close()


async def test_older_nodes_register_spelling_and_errors(live: LiveServer, cli: RunCli) -> None:
    await live.store.create_user("bob")
    client, _, auth_url = await start_login(live)
    auth_id = auth_url.rsplit("/", 1)[1]
    try:
        unknown_user = await cli("nodes", "register", "--user", "nobody", "--key", auth_id)
        assert unknown_user.code != 0 and "nobody" in unknown_user.err
        unknown_id = await cli("nodes", "register", "--user", "bob", "--key", "hskey-authreq-000000")
        assert unknown_id.code != 0 and "no login is waiting" in unknown_id.err
        ok = await cli("nodes", "register", "--user", "bob", "--key", auth_id, "-o", "json")
        assert ok.code == 0, ok.err
        assert ok.json()["user"]["name"] == "bob"
    finally:
        await client.close()


async def test_rejected_login_is_refused_with_a_clear_error(live: LiveServer, cli: RunCli) -> None:
    client, node_key, auth_url = await start_login(live)
    try:
        waiting = asyncio.ensure_future(client.register(node_key, hostname="laptop", followup=auth_url))
        await asyncio.sleep(0.1)
        result = await cli("auth", "reject", "--auth-id", auth_url.rsplit("/", 1)[1])
        assert result.code == 0, result.err
        answer = await asyncio.wait_for(waiting, 5)
        assert answer["Error"] == "registration was rejected by the operator"
        assert not live.store.nodes
        outcomes = [e["outcome"] for e in live.server.audit.query(action="node.register")]
        assert outcomes == ["rejected", "denied"], "the operator's verdict, then the client's refused attempt"
    finally:
        await client.close()


async def test_stale_followup_gets_a_fresh_login_url(live: LiveServer) -> None:
    client, node_key, _ = await start_login(live)
    try:
        stale = f"{live.url}/register/hskey-authreq-{'0' * 24}"
        again = await client.register(node_key, hostname="laptop", followup=stale)
        assert again["AuthURL"].startswith(f"{live.url}/register/hskey-authreq-")
        assert again["AuthURL"] != stale
    finally:
        await client.close()
