"""/user: create, list with filters, rename, delete, and each refusal."""

from __future__ import annotations

from tests.api.conftest import Api
from tests.live_server import LiveServer


async def test_create_returns_the_user_in_headscale_shape(api: Api) -> None:
    status, body = await api.post(
        "/user",
        json={
            "name": "alice",
            "displayName": "Alice",
            "email": "a@example.com",
            "pictureUrl": "https://example.com/a.png",
        },
    )
    assert status == 200
    user = body["user"]
    assert set(user) == {
        "id",
        "name",
        "createdAt",
        "displayName",
        "email",
        "providerId",
        "provider",
        "profilePicUrl",
    }
    assert user["id"] == "1" and isinstance(user["id"], str)
    assert (user["name"], user["displayName"], user["email"]) == ("alice", "Alice", "a@example.com")
    assert user["profilePicUrl"] == "https://example.com/a.png"
    assert user["createdAt"].endswith("Z")


async def test_camel_case_body_fields_are_accepted(api: Api) -> None:
    status, body = await api.post("/user", json={"name": "bob", "displayName": "Bob"})
    assert status == 200 and body["user"]["displayName"] == "Bob"


async def test_list_filters_by_name_email_and_id(api: Api) -> None:
    for name in ("alice", "bob", "carol"):
        await api.post("/user", json={"name": name, "email": f"{name}@example.com"})
    status, body = await api.get("/user")
    assert status == 200 and [u["name"] for u in body["users"]] == ["alice", "bob", "carol"]
    assert [u["name"] for u in (await api.get("/user", params={"name": "bob"}))[1]["users"]] == ["bob"]
    assert [
        u["name"] for u in (await api.get("/user", params={"email": "carol@example.com"}))[1]["users"]
    ] == ["carol"]
    assert [u["name"] for u in (await api.get("/user", params={"id": "1"}))[1]["users"]] == ["alice"]
    assert (await api.get("/user", params={"name": "nobody"}))[1]["users"] == []


async def test_list_with_a_non_numeric_id_is_invalid(api: Api) -> None:
    status, body = await api.get("/user", params={"id": "abc"})
    assert status == 400 and body["code"] == 3 and "id" in body["message"]


async def test_create_refuses_missing_invalid_and_duplicate_names(api: Api) -> None:
    status, body = await api.post("/user", json={})
    assert status == 400 and body == {"code": 3, "message": "name is required", "details": []}
    status, body = await api.post("/user", json={"name": "bad name!"})
    assert status == 400 and "invalid user name" in body["message"]
    status, body = await api.post("/user", json={"name": 42})
    assert status == 400 and "Failed to parse name field" in body["message"]
    await api.post("/user", json={"name": "alice"})
    status, body = await api.post("/user", json={"name": "alice"})
    assert status == 409 and body["code"] == 6 and "already exists" in body["message"]


async def test_rename(api: Api) -> None:
    await api.post("/user", json={"name": "alice"})
    await api.post("/user", json={"name": "bob"})
    status, body = await api.post("/user/1/rename/alicia")
    assert status == 200 and body["user"]["name"] == "alicia" and body["user"]["id"] == "1"
    status, body = await api.post("/user/1/rename/bob")
    assert status == 409 and "already exists" in body["message"]
    status, body = await api.post("/user/99/rename/zed")
    assert status == 404 and body["code"] == 5 and "user 99 not found" in body["message"]
    status, body = await api.post("/user/x/rename/zed")
    assert status == 400 and "parameter: old_id" in body["message"]


async def test_delete(api: Api, live: LiveServer) -> None:
    await api.post("/user", json={"name": "alice"})
    status, body = await api.delete("/user/1")
    assert (status, body) == (200, {})
    assert live.store.users == {}
    status, body = await api.delete("/user/1")
    assert status == 404 and "not found" in body["message"]
    status, body = await api.delete("/user/-3")
    assert status == 400


async def test_delete_refuses_a_user_with_nodes(api: Api, live: LiveServer) -> None:
    await api.post("/user", json={"name": "alice"})
    await live.add_node("laptop", user_id=1)
    status, body = await api.delete("/user/1")
    assert status == 400 and body["code"] == 9 and "still has nodes" in body["message"]
    assert 1 in live.store.users
