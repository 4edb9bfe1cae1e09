"""The smaller client-facing endpoints: TS2021 over WebSocket, a client-requested key expiry, the requests
Headscale declares unimplemented, and /bootstrap-dns."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from pyheadscale.client.control import ControlClient
from pyheadscale.control import noise
from pyheadscale.tailcfg.gotime import go_time
from pyheadscale.tailkey import MachinePrivate, MachinePublic, NodePrivate
from tests.live_server import LiveServer, MapReader, StartLive


async def test_ts2021_over_websocket_registers_and_streams_a_map(live: LiveServer) -> None:
    client = ControlClient(live.url, MachinePrivate.generate())
    await asyncio.wait_for(client.connect(websocket=True), 5)
    live.clients.append(client)
    assert client.early_payload is None, "the websocket form carries no early payload"
    node_key = NodePrivate.generate()
    answer = await client.register(node_key, auth_key=await live.preauth_key(), hostname="browser")
    assert answer["MachineAuthorized"], answer
    reader = MapReader(client.map_stream(node_key, hostname="browser"))
    full = await reader.next()
    assert full["Node"]["Name"].startswith("browser")
    await reader.close()


@pytest.mark.parametrize(
    ("query", "protocol", "message"),
    [
        ("", "tailscale-control-protocol", "invalid or missing X-Tailscale-Handshake parameter"),
        (
            "?X-Tailscale-Handshake=AAAA",
            "tailscale-control-protocol",
            "invalid or missing X-Tailscale-Handshake",
        ),
        (
            "?X-Tailscale-Handshake={init}",
            "",
            "websocket must offer the tailscale-control-protocol subprotocol",
        ),
    ],
)
async def test_websocket_upgrade_refusals_name_the_problem(
    live: LiveServer, query: str, protocol: str, message: str
) -> None:
    server_public = MachinePublic.from_text((await _get_json(f"{live.url}/key?v=130"))["publicKey"])
    init = base64.b64encode(
        noise.Initiator(MachinePrivate.generate(), server_public, 130).initiation()
    ).decode()
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
    }
    if protocol:
        headers["Sec-WebSocket-Protocol"] = protocol
    url = f"{live.url}/ts2021{query.format(init=quote(init, safe=''))}"
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        body = await resp.text()
    assert resp.status == 400 and message in body, body


async def _get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return await resp.json()


async def test_client_requested_key_expiry_is_kept(live: LiveServer) -> None:
    wanted = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    node = await live.node("shortlived", expiry=go_time(wanted))
    stored = live.record(node)
    assert stored.expiry == wanted


async def test_default_expiry_applies_when_the_client_asks_none(start_live: StartLive) -> None:
    live: LiveServer = await start_live(node={"expiry": "2h"})
    node = await live.node("default")
    stored = live.record(node)
    assert stored.expiry is not None
    assert timedelta(hours=1, minutes=59) < stored.expiry - datetime.now(UTC) <= timedelta(hours=2)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/machine/set-dns"),
        ("POST", "/machine/id-token"),
        ("GET", "/machine/whoami"),
        ("PATCH", "/machine/set-device-attr"),
        ("POST", "/machine/audit-log"),
    ],
)
async def test_requests_headscale_leaves_unimplemented_get_its_501(
    live: LiveServer, method: str, path: str
) -> None:
    node = await live.node("n")
    body = {
        "NodeKey": node.node_key_text,
        "Name": "_acme-challenge.n.example.com",
        "Type": "TXT",
        "Value": "x",
    }
    status, answer = await node.client.request(method, path, body)
    assert (status, answer) == (501, b"Not implemented yet\n")


async def test_bootstrap_dns_resolves_the_derp_map_hostnames(start_live: StartLive) -> None:
    live: LiveServer = await start_live(derp={"server": {"enabled": True, "stun_listen_addr": "127.0.0.1:0"}})
    async with aiohttp.ClientSession() as http, http.get(f"{live.url}/bootstrap-dns") as resp:
        answer = await resp.json()
    assert resp.status == 200
    assert answer == {"127.0.0.1": ["127.0.0.1"]}


async def test_bootstrap_dns_is_absent_without_the_embedded_relay(live: LiveServer) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{live.url}/bootstrap-dns") as resp:
        assert resp.status == 404


async def test_client_requested_expiry_holds_for_an_interactive_login(start_live: StartLive) -> None:
    live: LiveServer = await start_live(node={"expiry": "1h"})
    await live.store.create_user("alice")
    wanted = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    client = await live.client()
    node_key = NodePrivate.generate()
    first = await client.register(node_key, hostname="laptop", expiry=go_time(wanted))
    auth_url = first["AuthURL"]
    waiting = asyncio.ensure_future(
        client.register(node_key, hostname="laptop", expiry=go_time(wanted), followup=auth_url)
    )
    await asyncio.sleep(0.1)
    _, secret = await live.store.create_api_key(None)
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {secret}"}) as http,
        http.post(
            f"{live.url}/api/v1/auth/register",
            json={"auth_id": auth_url.rsplit("/", 1)[1], "user": "alice"},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
    assert (await asyncio.wait_for(waiting, 5))["MachineAuthorized"]
    node = live.store.node_by_machine_key(client.machine_key_text)
    assert node is not None and node.expiry == wanted
