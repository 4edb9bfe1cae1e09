"""/node: list, get, delete, expire, rename, move, tags, approve routes, register, and each refusal."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.api.conftest import Api
from tests.api.test_protojson import NODE_JSON_FIELDS
from tests.live_server import LiveServer


@pytest.fixture
async def alice(api: Api) -> str:
    return str((await api.post("/user", json={"name": "alice"}))[1]["user"]["id"])


async def test_list_and_get(api: Api, live: LiveServer, alice: str) -> None:
    await api.post("/user", json={"name": "bob"})
    laptop = await live.add_node("laptop", user_id=1, routes=["10.0.0.0/8"])
    await live.add_node("phone", user_id=2)
    status, body = await api.get("/node")
    assert status == 200 and [n["name"] for n in body["nodes"]] == ["laptop", "phone"]
    node = body["nodes"][0]
    assert list(node) == NODE_JSON_FIELDS
    assert node["id"] == str(laptop.id) and node["machineKey"] == laptop.machine_key
    assert node["nodeKey"] == laptop.node_key
    assert node["ipAddresses"] == ["100.64.0.1", "fd7a:115c:a1e0::1"]
    assert node["user"]["name"] == "alice" and node["givenName"] == "laptop"
    assert node["registerMethod"] == "REGISTER_METHOD_AUTH_KEY" and node["online"] is False
    assert node["availableRoutes"] == ["10.0.0.0/8"] and node["approvedRoutes"] == []
    assert node["preAuthKey"]["key"].endswith("-***") and node["expiry"] is None
    assert [n["name"] for n in (await api.get("/node", params={"user": "bob"}))[1]["nodes"]] == ["phone"]
    assert [n["name"] for n in (await api.get("/node", params={"user": alice}))[1]["nodes"]] == ["laptop"]
    status, body = await api.get(f"/node/{laptop.id}")
    assert status == 200 and body["node"] == node


async def test_tagged_nodes_belong_to_tagged_devices(api: Api, live: LiveServer) -> None:
    """Listed, a tagged node shows the synthetic tagged-devices user; alone it has none, as in Headscale."""
    node = await live.add_node("server", tags=["tag:server"])
    body = (await api.get("/node"))[1]["nodes"][0]
    assert body["user"]["name"] == "tagged-devices" and body["tags"] == ["tag:server"]
    assert (
        body["user"]["displayName"] == "Tagged Devices"
        and body["user"]["createdAt"] == "0001-01-01T00:00:00Z"
    )
    body = (await api.get(f"/node/{node.id}"))[1]["node"]
    assert body["user"] is None and body["tags"] == ["tag:server"]


async def test_lookup_refusals(api: Api) -> None:
    status, body = await api.get("/node/5")
    assert (status, body["code"], body["message"]) == (404, 5, "node 5 not found")
    status, body = await api.get("/node/abc")
    assert status == 400 and body["code"] == 3 and "parameter: node_id" in body["message"]
    status, body = await api.get("/node/99999999999999999999")
    assert status == 400
    status, body = await api.get("/node", params={"user": "nobody"})
    assert status == 404 and "nobody" in body["message"]


async def test_delete(api: Api, live: LiveServer, alice: str) -> None:
    node = await live.add_node("laptop", user_id=int(alice))
    assert (await api.delete(f"/node/{node.id}")) == (200, {})
    assert live.store.nodes == {}
    status, _ = await api.delete(f"/node/{node.id}")
    assert status == 404


async def test_expire_now_at_a_time_and_never(api: Api, live: LiveServer, alice: str) -> None:
    node = await live.add_node("laptop", user_id=int(alice))
    status, body = await api.post(f"/node/{node.id}/expire")
    assert status == 200
    expiry = datetime.fromisoformat(body["node"]["expiry"].replace("Z", "+00:00"))
    assert expiry <= datetime.now(UTC) and live.store.is_expired(live.store.nodes[node.id])
    # As Headscale's gateway binds it, this call takes its fields from the query string, not a body.
    status, body = await api.post(f"/node/{node.id}/expire", params={"expiry": "2099-05-06T07:08:09Z"})
    assert status == 200 and body["node"]["expiry"] == "2099-05-06T07:08:09Z"
    status, body = await api.post(f"/node/{node.id}/expire", params={"expiry": "2098-01-01T00:00:00+00:00"})
    assert status == 200 and body["node"]["expiry"] == "2098-01-01T00:00:00Z"
    status, body = await api.post(f"/node/{node.id}/expire", params={"disableExpiry": "true"})
    assert status == 200 and body["node"]["expiry"] is None
    status, body = await api.post(f"/node/{node.id}/expire", params={"disable_expiry": "true"})
    assert status == 200 and body["node"]["expiry"] is None
    status, body = await api.post(
        f"/node/{node.id}/expire", params={"disableExpiry": "true", "expiry": "2099-05-06T07:08:09Z"}
    )
    assert status == 400 and "both" in body["message"]
    status, body = await api.post(f"/node/{node.id}/expire", params={"expiry": "soon"})
    assert status == 400 and "expiry" in body["message"]
    status, body = await api.post(f"/node/{node.id}/expire", params={"disableExpiry": "maybe"})
    assert status == 400 and "not a boolean" in body["message"]
    # A body is no part of this call (Headscale's binding has none): it is ignored, and the node expires now.
    status, body = await api.post(f"/node/{node.id}/expire", json={"disableExpiry": True})
    assert status == 200 and body["node"]["expiry"] is not None


async def test_rename(api: Api, live: LiveServer, alice: str) -> None:
    laptop = await live.add_node("laptop", user_id=int(alice))
    await live.add_node("phone", user_id=int(alice))
    status, body = await api.post(f"/node/{laptop.id}/rename/work-laptop")
    assert status == 200 and body["node"]["givenName"] == "work-laptop" and body["node"]["name"] == "laptop"
    status, body = await api.post(f"/node/{laptop.id}/rename/phone")
    assert status == 400 and "already in use" in body["message"]
    status, body = await api.post(f"/node/{laptop.id}/rename/no_underscores")
    assert status == 400 and "invalid node name" in body["message"]
    status, _ = await api.post("/node/77/rename/x")
    assert status == 404


async def test_move(api: Api, live: LiveServer, alice: str) -> None:
    bob = (await api.post("/user", json={"name": "bob"}))[1]["user"]["id"]
    node = await live.add_node("laptop", user_id=int(alice))
    status, body = await api.post(f"/node/{node.id}/user", json={"user": bob})
    assert status == 200 and body["node"]["user"]["name"] == "bob"
    status, body = await api.post(f"/node/{node.id}/user", json={"user": "42"})
    assert status == 404 and "user 42 not found" in body["message"]
    status, body = await api.post(f"/node/{node.id}/user", json={})
    assert status == 400 and "user is required" in body["message"]
    tagged = await live.add_node("server", tags=["tag:server"])
    status, body = await api.post(f"/node/{tagged.id}/user", json={"user": bob})
    assert status == 400 and "tagged" in body["message"]


async def test_set_tags(api: Api, live: LiveServer, alice: str) -> None:
    node = await live.add_node("laptop", user_id=int(alice))
    status, body = await api.post(f"/node/{node.id}/tags", json={"tags": ["tag:web", "tag:db", "tag:web"]})
    assert status == 200 and body["node"]["tags"] == ["tag:db", "tag:web"]
    assert live.store.nodes[node.id].tags == ["tag:db", "tag:web"]
    for tags, message in (
        (["web"], "must start with 'tag:'"),
        (["tag:Web"], "lowercase"),
        ([], "must not be empty"),
        ("tag:web", "repeated field tags"),
    ):
        status, body = await api.post(f"/node/{node.id}/tags", json={"tags": tags})
        assert status == 400 and message in body["message"], (tags, body)
    status, _ = await api.post("/node/99/tags", json={"tags": ["tag:web"]})
    assert status == 404


async def test_approve_routes(api: Api, live: LiveServer, alice: str) -> None:
    node = await live.add_node("router", user_id=int(alice), routes=["10.0.0.0/8", "0.0.0.0/0", "::/0"])
    status, body = await api.post(
        f"/node/{node.id}/approve_routes", json={"routes": ["10.0.0.0/8", "192.168.1.0/24"]}
    )
    assert status == 200
    assert body["node"]["approvedRoutes"] == ["10.0.0.0/8", "192.168.1.0/24"]
    assert body["node"]["subnetRoutes"] == ["10.0.0.0/8"]
    status, body = await api.post(f"/node/{node.id}/approve_routes", json={"routes": ["0.0.0.0/0"]})
    assert status == 200 and body["node"]["approvedRoutes"] == ["0.0.0.0/0", "::/0"]
    status, body = await api.post(f"/node/{node.id}/approve_routes", json={"routes": []})
    assert status == 200 and body["node"]["approvedRoutes"] == []
    for route in ("10.0.0.1/8", "not-a-route"):
        status, body = await api.post(f"/node/{node.id}/approve_routes", json={"routes": [route]})
        assert status == 400 and route in body["message"]


async def test_register_validates_user_and_auth_id(api: Api, alice: str) -> None:
    status, body = await api.post("/node/register", params={"user": "alice"})
    assert status == 400 and "required" in body["message"]
    status, body = await api.post("/node/register", params={"user": "nobody", "key": "abc"})
    assert status == 404
    status, body = await api.post("/node/register", params={"user": "alice", "key": "abc"})
    assert status == 404 and "no login is waiting with auth id 'abc'" in body["message"]
