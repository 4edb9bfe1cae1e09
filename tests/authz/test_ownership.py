"""Every node has an owner: a user or its tags. A deleted user's preauth keys go with it, and keys an older
version left ownerless are refused when used."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from pyheadscale.control.verify import DerpAccess
from pyheadscale.state.errors import AuthFailed, StateError
from pyheadscale.tailkey import MachinePrivate, NodePrivate, NodePublic
from tests.authz.conftest import decode_messages, map_request
from tests.live_server import ClientNode, LiveServer


async def test_deleting_a_user_deletes_its_keys(live: LiveServer) -> None:
    store = live.store
    user = await store.create_user("leaver")
    _, plain = await store.create_preauth_key(user.id, reusable=True)
    _, tagged = await store.create_preauth_key(user.id, reusable=True, tags=["tag:ci"])
    keeper = await store.create_user("keeper")
    kept, _ = await store.create_preauth_key(keeper.id)
    await store.delete_user(user.id)
    assert list(store.preauth_keys) == [kept.id]
    entries = store.audit.query(action="preauthkey.delete")
    assert len(entries) == 2
    await live.restart()
    assert list(live.store.preauth_keys) == [kept.id]
    for text in (plain, tagged):
        client = await live.client()
        answer = await client.register(NodePrivate.generate(), auth_key=text)
        assert answer["MachineAuthorized"] is False and answer["Error"] == "invalid authkey", answer
    assert live.store.nodes == {}


async def test_ownerless_keys_left_by_older_versions_are_refused(live: LiveServer) -> None:
    """Older versions nulled a deleted user's keys' owner and let them register nodes owned by nobody."""
    store = live.store
    user = await store.create_user("gone")
    key, text = await store.create_preauth_key(user.id, reusable=True)
    orphan = replace(key, user_id=None)
    await store.db.update_preauth_key(orphan)
    await live.restart()
    assert live.store.preauth_keys[key.id].user_id is None
    client = await live.client()
    answer = await client.register(NodePrivate.generate(), auth_key=text)
    assert answer["MachineAuthorized"] is False
    assert "user was deleted" in answer["Error"], answer
    assert live.store.nodes == {}


async def test_no_node_without_an_owner(live: LiveServer) -> None:
    store = live.store
    with pytest.raises(StateError, match="owner"):
        await store.register(
            machine_key=MachinePrivate.generate().public().text,
            node_key=NodePrivate.generate().public().text,
            hostinfo={"Hostname": "nobody"},
            user_id=None,
            tags=[],
            method="cli",
            ephemeral=False,
            expiry=None,
        )
    assert store.nodes == {}
    owner = await store.create_user("ops")
    _, tagged_key = await store.create_preauth_key(owner.id, tags=["tag:server"])
    node = await live.node("server", auth_key=tagged_key)
    node_id = live.record(node).id
    assert store.nodes[node_id].user_id is None
    with pytest.raises(StateError, match="at least one tag"):
        await store.set_tags(node_id, [])
    assert store.nodes[node_id].tags == ["tag:server"]


async def test_ownerless_nodes_left_by_older_versions_get_nothing(live: LiveServer) -> None:
    """A node an older version registered with no owner and no tag: no map, no DERP, until it is given one."""
    a = await live.node("a")
    b = await live.node("b")
    store = live.store
    b_id = live.record(b).id
    await store.db.update_node(replace(store.nodes[b_id], user_id=None, tags=[]))
    await live.restart()
    store = live.store
    client = await live.client(b.machine_key)
    orphan = ClientNode(client, b.machine_key, b.node_key, b.register)
    status, body = await map_request(orphan)
    (message,) = decode_messages(body)
    assert status == 200 and message["Peers"] == [] and message["Node"]["ID"] == b_id
    assert message["Node"]["Expired"] is True and message["Node"]["MachineAuthorized"] is False
    assert a.node_key_text.encode() not in body
    assert not DerpAccess(store).admits(NodePublic.from_text(b.node_key_text))
    # The operator gives it an owner: it is back.
    alice = store.user_by_name("alice")
    assert alice is not None
    await store.move_node(b_id, alice.id)
    status, body = await map_request(orphan)
    assert [p["ID"] for p in decode_messages(body)[0]["Peers"]] == [live.record(a).id]


async def test_a_node_whose_key_was_deleted_can_still_be_expired(live: LiveServer) -> None:
    """Deleting a preauth key (or the user whose tagged key made a node) nulls the node's reference in the
    database; the node's next write must not put the dangling id back (a foreign key error that left the node
    impossible to expire or update)."""
    store = live.store
    owner = await store.create_user("ops")
    _, tagged_key = await store.create_preauth_key(owner.id, tags=["tag:server"])
    tagged = await live.node("server", auth_key=tagged_key)
    plain = await live.node("laptop")
    tagged_id = live.record(tagged).id
    plain_id = live.record(plain).id
    await store.delete_user(owner.id)  # takes the tagged key with it
    plain_key_id = store.nodes[plain_id].auth_key_id
    assert plain_key_id is not None
    await store.delete_preauth_key(plain_key_id)
    for node_id in (tagged_id, plain_id):
        await store.set_expiry(node_id, datetime.now(UTC))
        assert store.is_expired(store.nodes[node_id]) and store.nodes[node_id].auth_key_id is None
    await live.restart()
    assert all(live.store.is_expired(n) for n in live.store.nodes.values())


async def test_a_key_expired_while_a_registration_waits_its_turn_is_refused(live: LiveServer) -> None:
    store = live.store
    user = await store.create_user("late")
    key, text = await store.create_preauth_key(user.id)
    found = store.find_preauth_key(text)
    await store.expire_preauth_key(key.id)
    with pytest.raises(AuthFailed, match="expired"):
        await store.register_with_key(
            found,
            machine_key=MachinePrivate.generate().public().text,
            node_key=NodePrivate.generate().public().text,
            hostinfo={"Hostname": "late"},
            expiry=None,
        )
    assert store.nodes == {}
