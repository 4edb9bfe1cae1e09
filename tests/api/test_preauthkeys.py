"""/preauthkey: create (the only time the key is shown), list, expire, delete, and each refusal."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from pyheadscale.state.errors import AuthFailed
from tests.api.conftest import Api
from tests.live_server import LiveServer

KEY = re.compile(r"^hskey-auth-([0-9a-f]{12})-[0-9a-f]{64}$")


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


async def _user(api: Api, name: str = "alice") -> str:
    return str((await api.post("/user", json={"name": name}))[1]["user"]["id"])


async def test_create_shows_the_key_once_and_lists_it_masked(api: Api, live: LiveServer) -> None:
    user_id = await _user(api)
    status, body = await api.post(
        "/preauthkey",
        json={"user": user_id, "reusable": True, "ephemeral": True, "expiration": "2099-01-02T03:04:05Z"},
    )
    assert status == 200
    key = body["preAuthKey"]
    assert set(key) == {
        "user",
        "id",
        "key",
        "reusable",
        "ephemeral",
        "used",
        "expiration",
        "createdAt",
        "aclTags",
    }
    match = KEY.match(key["key"])
    assert match is not None
    assert key["user"]["name"] == "alice" and key["reusable"] and key["ephemeral"] and not key["used"]
    assert key["expiration"] == "2099-01-02T03:04:05Z" and key["aclTags"] == []
    listed = (await api.get("/preauthkey"))[1]["preAuthKeys"]
    assert [k["key"] for k in listed] == [f"hskey-auth-{match.group(1)}-***"]
    # The key works for registration: the store finds it by its text.
    assert live.store.find_preauth_key(key["key"]).id == int(key["id"])


async def test_tagged_key_without_user(api: Api) -> None:
    status, body = await api.post("/preauthkey", json={"aclTags": ["tag:server", "tag:web"]})
    assert status == 200
    assert body["preAuthKey"]["user"] is None and body["preAuthKey"]["aclTags"] == [
        "tag:server",
        "tag:web",
    ]


async def test_list_is_every_key_in_id_order(api: Api) -> None:
    """Headscale's ListPreAuthKeys takes no filter: an unknown query parameter is ignored."""
    alice, bob = await _user(api, "alice"), await _user(api, "bob")
    await api.post("/preauthkey", json={"user": bob})
    await api.post("/preauthkey", json={"user": alice})
    listed = (await api.get("/preauthkey", params={"user": bob}))[1]["preAuthKeys"]
    assert [(k["id"], k["user"]["name"]) for k in listed] == [("1", "bob"), ("2", "alice")]


async def test_create_refusals(api: Api) -> None:
    user_id = await _user(api)
    cases = [
        ({"user": "99"}, 404, "user"),
        ({"user": "alice"}, 400, "Failed to parse user field"),
        ({"user": user_id, "aclTags": ["server"]}, 400, "must start with 'tag:'"),
        ({"user": user_id, "aclTags": ["tag:Server"]}, 400, "lowercase"),
        ({"user": user_id, "aclTags": ["tag:a b"]}, 400, "spaces"),
        ({"user": user_id, "aclTags": "tag:a"}, 400, "repeated field aclTags"),
        ({"user": user_id, "reusable": "yes"}, 400, "reusable field"),
        ({"user": user_id, "expiration": "tomorrow"}, 400, "expiration field"),
        ({"user": user_id, "expiration": "2001-01-01T00:00:00Z"}, 400, "in the past"),
        ({}, 400, "needs a user or at least one tag"),
    ]
    for body, status, message in cases:
        got_status, got = await api.post("/preauthkey", json=body)
        assert (got_status, message in got["message"]) == (status, True), (body, got)


async def test_expire_by_id(api: Api) -> None:
    user_id = await _user(api)
    await api.post("/preauthkey", json={"user": user_id})
    await api.post("/preauthkey", json={"user": user_id})
    before = [k["expiration"] for k in (await api.get("/preauthkey"))[1]["preAuthKeys"]]
    status, body = await api.post("/preauthkey/expire", json={"id": "1"})
    assert (status, body) == (200, {})
    status, body = await api.post("/preauthkey/expire", json={"id": 2})
    assert (status, body) == (200, {})
    after = [k["expiration"] for k in (await api.get("/preauthkey"))[1]["preAuthKeys"]]
    now = datetime.now(UTC)
    assert all(_parse(stamp) > now for stamp in before)
    assert all(_parse(stamp) <= now for stamp in after)


async def test_expired_key_is_refused_for_registration(api: Api, live: LiveServer) -> None:
    user_id = await _user(api)
    key = (await api.post("/preauthkey", json={"user": user_id}))[1]["preAuthKey"]
    await api.post("/preauthkey/expire", json={"id": key["id"]})
    with pytest.raises(AuthFailed, match="expired"):
        live.store.find_preauth_key(key["key"])


async def test_expire_and_delete_refusals(api: Api) -> None:
    status, body = await api.post("/preauthkey/expire", json={"id": "7"})
    assert status == 404 and "preauth key 7 not found" in body["message"]
    status, body = await api.post("/preauthkey/expire", json={"id": "x"})
    assert status == 400
    status, body = await api.post("/preauthkey/expire", json={})
    assert status == 400 and "id is required" in body["message"]
    status, body = await api.delete("/preauthkey", params={"id": "7"})
    assert status == 404
    status, body = await api.delete("/preauthkey", params={"key": "hskey-auth-000000000000-***"})
    assert status == 400 and "id is required" in body["message"]


async def test_delete(api: Api, live: LiveServer) -> None:
    user_id = await _user(api)
    key = (await api.post("/preauthkey", json={"user": user_id}))[1]["preAuthKey"]
    status, body = await api.delete("/preauthkey", params={"id": key["id"]})
    assert (status, body) == (200, {})
    assert live.store.preauth_keys == {}
    assert (await api.get("/preauthkey"))[1]["preAuthKeys"] == []
