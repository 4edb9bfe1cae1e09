"""The authorization matrix, control-protocol half: every node-side actor x every action a machine can take
(map, endpoint/Hostinfo update, register, rotate, logout, DERP admit), each with its expected outcome.

Each cell runs on a fresh server (the embedded relay on, verifying clients), so no cell's action (a logout,
a rotation) leaks into another's. The REST and CLI halves are test_matrix_rest.py and test_matrix_cli.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from derp.client import DerpClient
from pyheadscale.client.control import ControlClient
from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.authz.conftest import REFUSED, SLOW, decode_messages, derp_config, map_request
from tests.derp.harness import within
from tests.live_server import ClientNode, LiveServer, StartLive

ACTORS = ("user-a", "user-b", "tagged", "oidc-user", "expired", "deleted", "unknown-machine", "a-as-b")
ACTIONS = ("map", "update", "register", "rotate", "logout", "derp")

# What each actor gets. "unknown-machine" is a machine with no node of its own presenting user A's node key
# (map, update, register, rotate, logout), and its own unregistered node key to the relay. "a-as-b" is user
# A's registered machine presenting user B's node key (the relay would need B's private key, which A lacks,
# so there it presents a key of its own making).
EXPECTED: dict[str, dict[str, str]] = {
    "user-a": {
        "map": "full",
        "update": "applied",
        "register": "authorized",
        "rotate": "rotated",
        "logout": "logged out",
        "derp": "admitted",
    },
    "user-b": {
        "map": "full",
        "update": "applied",
        "register": "authorized",
        "rotate": "rotated",
        "logout": "logged out",
        "derp": "admitted",
    },
    "tagged": {
        "map": "full",
        "update": "applied",
        "register": "authorized",
        "rotate": "rotated",
        "logout": "logged out",
        "derp": "admitted",
    },
    "oidc-user": {
        "map": "full",
        "update": "applied",
        "register": "authorized",
        "rotate": "rotated",
        "logout": "logged out",
        "derp": "admitted",
    },
    "expired": {
        "map": "only itself",
        "update": "refused 403",
        "register": "expired",
        "rotate": "sent to log in",
        "logout": "expired",
        "derp": "refused",
    },
    "deleted": {
        "map": "refused 404",
        "update": "refused 404",
        "register": "sent to log in",
        "rotate": "sent to log in",
        "logout": "expired",
        "derp": "refused",
    },
    "a-as-b": {
        "map": "refused 401",
        "update": "refused 401",
        "register": "refused",
        "rotate": "sent to log in",
        "logout": "refused",
        "derp": "refused",
    },
    "unknown-machine": {
        "map": "refused 401",
        "update": "refused 401",
        "register": "refused",
        "rotate": "sent to log in",
        "logout": "refused",
        "derp": "refused",
    },
}


@dataclass
class Actor:
    """Who acts: the machine's client and the node key it presents, and the node that key names (if any)."""

    client: ControlClient
    node_key: NodePrivate
    node_id: int | None
    victim: int  # the node whose state must not change unless the actor is allowed to change it
    derp_key: NodePrivate  # the node key it presents to the relay

    @property
    def node_key_text(self) -> str:
        return self.node_key.public().text

    def as_node(self) -> ClientNode:
        return ClientNode(self.client, MachinePrivate.generate(), self.node_key, {})


async def make_actor(live: LiveServer, name: str) -> Actor:
    store = live.store
    a = await live.node("a")
    a_id = live.record(a).id
    await live.node("peer", auth_key=await live.preauth_key("dave"))  # so every node has a peer
    if name == "user-a":
        return Actor(a.client, a.node_key, a_id, a_id, a.node_key)
    if name == "user-b":
        b = await live.node("b", auth_key=await live.preauth_key("bob"))
        return Actor(b.client, b.node_key, live.record(b).id, a_id, b.node_key)
    if name == "tagged":
        owner = store.user_by_name("alice")
        assert owner is not None
        _, text = await store.create_preauth_key(owner.id, tags=["tag:server"])
        t = await live.node("t", auth_key=text)
        return Actor(t.client, t.node_key, live.record(t).id, a_id, t.node_key)
    if name == "oidc-user":
        user = await store.create_user(
            "carol", email="carol@example.com", provider="oidc", provider_id="https://idp.example/carol"
        )
        machine, node_key = MachinePrivate.generate(), NodePrivate.generate()
        client = await live.client(machine)
        login = live.server.logins.start(
            machine.public().text,
            node_key.public().text,
            {"Hostname": "carol-laptop"},
        )
        node = await live.server.logins.approve(store, login, user, None, method="oidc")
        return Actor(client, node_key, node.id, a_id, node_key)
    if name == "expired":
        e = await live.node("e")
        e_id = live.record(e).id
        await store.set_expiry(e_id, datetime.now(UTC) - timedelta(seconds=1))
        return Actor(e.client, e.node_key, e_id, e_id, e.node_key)
    if name == "deleted":
        d = await live.node("d")
        await store.delete_node(live.record(d).id)
        return Actor(d.client, d.node_key, None, a_id, d.node_key)
    if name == "a-as-b":
        b = await live.node("b", auth_key=await live.preauth_key("bob"))
        b_id = live.record(b).id
        return Actor(a.client, b.node_key, None, b_id, NodePrivate.generate())
    assert name == "unknown-machine"
    # It can name A's node key in control requests, but has no node key of its own the relay would know.
    return Actor(await live.client(), a.node_key, None, a_id, NodePrivate.generate())


def snapshot(live: LiveServer, node_id: int) -> Any:
    node = live.store.nodes.get(node_id)
    return None if node is None else (node.node_key, node.endpoints, node.hostinfo, node.expiry)


async def do_map(live: LiveServer, actor: Actor) -> str:
    status, body = await map_request(actor.as_node())
    if status != 200:
        return f"refused {status}"
    (message,) = decode_messages(body)
    if message["Node"]["Expired"]:
        assert message["Peers"] == [] and "DNSConfig" not in message
        return "only itself"
    assert message["Peers"] and "DNSConfig" in message
    return "full"


async def do_update(live: LiveServer, actor: Actor) -> str:
    endpoints = ["192.0.2.7:41641"]
    status, _ = await map_request(
        actor.as_node(), OmitPeers=True, Endpoints=endpoints, Hostinfo={"Hostname": "moved", "OS": "linux"}
    )
    if status != 200:
        return f"refused {status}"
    assert actor.node_id is not None and live.store.nodes[actor.node_id].endpoints == endpoints
    return "applied"


async def do_register(live: LiveServer, actor: Actor) -> str:
    answer = await actor.client.register(actor.node_key)
    if answer["Error"]:
        return "refused"
    if answer["AuthURL"]:
        return "sent to log in"
    if answer["NodeKeyExpired"]:
        return "expired"
    assert answer["MachineAuthorized"] is True
    return "authorized"


async def do_rotate(live: LiveServer, actor: Actor) -> str:
    fresh = NodePrivate.generate()
    answer = await actor.client.register(fresh, old_node_key=actor.node_key_text)
    if answer["Error"]:
        return "refused"
    if answer["AuthURL"]:
        return "sent to log in"
    assert answer["MachineAuthorized"] is True and not answer["NodeKeyExpired"]
    assert live.record(fresh.public().text).id == actor.node_id
    return "rotated"


async def do_logout(live: LiveServer, actor: Actor) -> str:
    was_expired = actor.node_id is not None and live.store.is_expired(live.store.nodes[actor.node_id])
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    answer = await actor.client.register(actor.node_key, expiry=past)
    if answer["Error"]:
        return "refused"
    assert answer["NodeKeyExpired"] is True
    if actor.node_id is not None and not was_expired:
        assert live.store.is_expired(live.store.nodes[actor.node_id])
        return "logged out"
    return "expired"


async def do_derp(live: LiveServer, actor: Actor) -> str:
    try:
        client = await within(DerpClient.connect(f"{live.url}/derp", actor.derp_key), SLOW)
    except REFUSED:
        return "refused"
    await client.close()
    return "admitted"


DO: dict[str, Callable[[LiveServer, Actor], Awaitable[str]]] = {
    "map": do_map,
    "update": do_update,
    "register": do_register,
    "rotate": do_rotate,
    "logout": do_logout,
    "derp": do_derp,
}


def test_matrix_covers_every_actor_and_action() -> None:
    assert set(EXPECTED) == set(ACTORS)
    for actor in ACTORS:
        assert set(EXPECTED[actor]) == set(ACTIONS) == set(DO), actor


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("actor_name", ACTORS)
async def test_node_actor_action(start_live: StartLive, actor_name: str, action: str) -> None:
    live: LiveServer = await start_live(derp=derp_config())
    actor = await make_actor(live, actor_name)
    expected = EXPECTED[actor_name][action]
    untouched = snapshot(live, actor.victim) if actor.victim != actor.node_id else None
    assert await DO[action](live, actor) == expected
    if untouched is not None:
        assert snapshot(live, actor.victim) == untouched, "another node's state changed"
