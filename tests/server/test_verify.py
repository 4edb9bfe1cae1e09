"""`/verify`: a standalone relay asks whether a node key may use it (derper's --verify-client-url)."""

from __future__ import annotations

import aiohttp

from derp.admission import AdmissionController
from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.live_server import StartLive


async def test_admits_registered_node_keys_only(start_live: StartLive) -> None:
    server = (await start_live()).server
    assert server.store is not None
    user = await server.store.create_user("alice")
    node_key = NodePrivate.generate().public().text
    await server.store.register(
        machine_key=MachinePrivate.generate().public().text,
        node_key=node_key,
        hostinfo={"Hostname": "n"},
        user_id=user.id,
        tags=[],
        method="cli",
        ephemeral=False,
        expiry=None,
    )
    url = f"{server.config.server_url}/verify"
    async with aiohttp.ClientSession() as http:

        async def ask(body: object) -> tuple[int, str]:
            async with http.post(url, json=body) as resp:
                return resp.status, await resp.text()

        assert await ask({"NodePublic": node_key, "Source": "127.0.0.1"}) == (200, '{"Allow": true}')
        stranger = NodePrivate.generate().public().text
        assert await ask({"NodePublic": stranger, "Source": "127.0.0.1"}) == (200, '{"Allow": false}')
        status, text = await ask({"NodePublic": "mkey:" + "0" * 64})
        assert status == 400 and "nodekey:" in text
        # The uppercase spelling of a registered key is that key (Tailscale's parser takes either case).
        upper = "nodekey:" + node_key.removeprefix("nodekey:").upper()
        assert await ask({"NodePublic": upper, "Source": "127.0.0.1"}) == (200, '{"Allow": true}')
        status, text = await ask({"NodePublic": node_key[:-1] + "g"})
        assert status == 400 and "not a hex digit" in text and node_key[8:40] not in text
        status, text = await ask(["not", "an", "object"])
        assert status == 400


async def test_the_derp_packages_admission_client_speaks_to_it(start_live: StartLive) -> None:
    server = (await start_live()).server
    assert server.store is not None
    user = await server.store.create_user("alice")
    node = NodePrivate.generate()
    await server.store.register(
        machine_key=MachinePrivate.generate().public().text,
        node_key=node.public().text,
        hostinfo={},
        user_id=user.id,
        tags=[],
        method="cli",
        ephemeral=False,
        expiry=None,
    )
    admission = AdmissionController(f"{server.config.server_url}/verify")
    try:
        assert await admission.allows(node.public(), "127.0.0.1")
        assert not await admission.allows(NodePrivate.generate().public(), "127.0.0.1")
    finally:
        await admission.close()
