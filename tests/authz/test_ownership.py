"""Every node has an owner: a user or its tags. A deleted user's preauth keys go with it, and keys an older
version left ownerless are refused when used."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from pyheadscale.control.verify import DerpAccess
from pyheadscale.state.errors import AuthFailed, StateError
from tailkey import MachinePrivate, NodePrivate, NodePublic
from tests.authz.conftest import decode_messages, map_request
from tests.control.conftest import Harness, Node


async def test_deleting_a_user_deletes_its_keys(harness: Harness) -> None:
    store = harness.store
    user = await store.create_user("leaver")
    _, plain = await store.create_preauth_key(user.id, reusable=True)
    _, tagged = await store.create_preauth_key(user.id, reusable=True, tags=["tag:ci"])
    keeper = await store.create_user("keeper")
    kept, _ = await store.create_preauth_key(keeper.id)
    await store.delete_user(user.id)
    assert list(store.preauth_keys) == [kept.id]
    entries = store.audit.query(action="preauthkey.delete")
    assert len(entries) == 2
    await harness.restart()
    assert list(harness.store.preauth_keys) == [kept.id]
    for text in (plain, tagged):
        client = await harness.client()
        answer = await client.register(NodePrivate.generate(), auth_key=text)
        assert answer["MachineAuthorized"] is False and answer["Error"] == "invalid authkey", answer
    assert harness.store.nodes == {}


async def test_ownerless_keys_left_by_older_versions_are_refused(harness: Harness) -> None:
    """Older versions nulled a deleted user's keys' owner and let them register nodes owned by nobody."""
    store = harness.store
    user = await store.create_user("gone")
    key, text = await store.create_preauth_key(user.id, reusable=True)
    orphan = replace(key, user_id=None)
    await store.db.update_preauth_key(orphan)
    await harness.restart()
    assert harness.store.preauth_keys[key.id].user_id is None
    client = await harness.client()
    answer = await client.register(NodePrivate.generate(), auth_key=text)
    assert answer["MachineAuthorized"] is False
    assert "user was deleted" in answer["Error"], answer
    assert harness.store.nodes == {}


async def test_no_node_without_an_owner(harness: Harness) -> None:
    store = harness.store
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
    node = await harness.node("server", auth_key=tagged_key)
    node_id = store.node_by_node_key(node.node_key_text).id
    assert store.nodes[node_id].user_id is None
    with pytest.raises(StateError, match="at least one tag"):
        await store.set_tags(node_id, [])
    assert store.nodes[node_id].tags == ["tag:server"]


async def test_ownerless_nodes_left_by_older_versions_get_nothing(harness: Harness) -> None:
    """A node an older version registered with no owner and no tag: no map, no DERP, until it is given one."""
    a = await harness.node("a")
    b = await harness.node("b")
    store = harness.store
    b_id = store.node_by_node_key(b.node_key_text).id
    await store.db.update_node(replace(store.nodes[b_id], user_id=None, tags=[]))
    await harness.restart()
    store = harness.store
    client = await harness.client(b.machine_key)
    orphan = Node(client, b.machine_key, b.node_key, b.register)
    status, body = await map_request(orphan)
    (message,) = decode_messages(body)
    assert status == 200 and message["Peers"] == [] and message["Node"]["ID"] == b_id
    assert message["Node"]["Expired"] is True and message["Node"]["MachineAuthorized"] is False
    assert a.node_key_text.encode() not in body
    assert not DerpAccess(store).admits(NodePublic.from_text(b.node_key_text))
    # The operator gives it an owner: it is back.
    await store.move_node(b_id, store.user_by_name("alice").id)
    status, body = await map_request(orphan)
    assert [p["ID"] for p in decode_messages(body)[0]["Peers"]] == [
        store.node_by_node_key(a.node_key_text).id
    ]


async def test_a_node_whose_key_was_deleted_can_still_be_expired(harness: Harness) -> None:
    """Deleting a preauth key (or the user whose tagged key made a node) nulls the node's reference in the
    database; the node's next write must not put the dangling id back (a foreign key error that left the node
    impossible to expire or update)."""
    store = harness.store
    owner = await store.create_user("ops")
    _, tagged_key = await store.create_preauth_key(owner.id, tags=["tag:server"])
    tagged = await harness.node("server", auth_key=tagged_key)
    plain = await harness.node("laptop")
    tagged_id = store.node_by_node_key(tagged.node_key_text).id
    plain_id = store.node_by_node_key(plain.node_key_text).id
    await store.delete_user(owner.id)  # takes the tagged key with it
    await store.delete_preauth_key(store.nodes[plain_id].auth_key_id)
    for node_id in (tagged_id, plain_id):
        await store.set_expiry(node_id, datetime.now(UTC))
        assert store.is_expired(store.nodes[node_id]) and store.nodes[node_id].auth_key_id is None
    await harness.restart()
    assert all(harness.store.is_expired(n) for n in harness.store.nodes.values())


async def test_a_key_expired_while_a_registration_waits_its_turn_is_refused(harness: Harness) -> None:
    store = harness.store
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
