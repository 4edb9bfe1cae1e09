"""node.expiry as Headscale applies it at registration: never to tagged nodes; a client's own expiry wins."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pyheadscale.state.names import now
from pyheadscale.tailkey import NodePrivate
from tests.live_server import LiveServer, StartLive


async def _register(live: LiveServer, key: str, **kwargs: Any) -> Any:
    client = await live.client()
    answer = await client.register(NodePrivate.generate(), auth_key=key, **kwargs)
    assert answer["MachineAuthorized"], answer
    return live.store.node_by_machine_key(client.machine_key_text)


async def test_tagged_nodes_never_get_the_default_expiry(start_live: StartLive) -> None:
    live = await start_live(node={"expiry": "1d"})
    user = await live.store.create_user("alice")
    _, personal = await live.store.create_preauth_key(user.id)
    _, tagged = await live.store.create_preauth_key(None, tags=["tag:server"])
    owned = await _register(live, personal)
    assert owned.expiry is not None
    assert timedelta(hours=23) < owned.expiry - now() <= timedelta(days=1)
    server = await _register(live, tagged)
    assert server.tags == ["tag:server"]
    assert server.expiry is None, "tagged nodes are exempt from node.expiry"


async def test_a_clients_requested_expiry_is_honoured(start_live: StartLive) -> None:
    live = await start_live(node={"expiry": "1d"})
    user = await live.store.create_user("alice")
    _, key = await live.store.create_preauth_key(user.id)
    wanted = (now() + timedelta(hours=5)).replace(microsecond=0)
    node = await _register(live, key, expiry=wanted.isoformat().replace("+00:00", "Z"))
    assert node.expiry == wanted
