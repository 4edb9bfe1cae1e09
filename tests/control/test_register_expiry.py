"""node.expiry as Headscale applies it at registration: never to tagged nodes; a client's own expiry wins."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from pyheadscale.state.names import now
from tailkey import NodePrivate
from tests.control.conftest import Harness

MakeHarness = Callable[..., Awaitable[Harness]]


async def _register(harness: Harness, key: str, **kwargs: Any) -> Any:
    client = await harness.client()
    answer = await client.register(NodePrivate.generate(), auth_key=key, **kwargs)
    assert answer["MachineAuthorized"], answer
    return harness.store.node_by_machine_key(client.machine_key_text)


async def test_tagged_nodes_never_get_the_default_expiry(make_harness: MakeHarness) -> None:
    harness = await make_harness(node={"expiry": "1d"})
    user = await harness.store.create_user("alice")
    _, personal = await harness.store.create_preauth_key(user.id)
    _, tagged = await harness.store.create_preauth_key(None, tags=["tag:server"])
    owned = await _register(harness, personal)
    assert owned.expiry is not None
    assert timedelta(hours=23) < owned.expiry - now() <= timedelta(days=1)
    server = await _register(harness, tagged)
    assert server.tags == ["tag:server"]
    assert server.expiry is None, "tagged nodes are exempt from node.expiry"


async def test_a_clients_requested_expiry_is_honoured(make_harness: MakeHarness) -> None:
    harness = await make_harness(node={"expiry": "1d"})
    user = await harness.store.create_user("alice")
    _, key = await harness.store.create_preauth_key(user.id)
    wanted = (now() + timedelta(hours=5)).replace(microsecond=0)
    node = await _register(harness, key, expiry=wanted.isoformat().replace("+00:00", "Z"))
    assert node.expiry == wanted
