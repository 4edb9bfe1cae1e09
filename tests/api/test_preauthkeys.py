"""/preauthkey: create (the only time the key is shown), list, expire, delete, and each refusal."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from pyheadscale.state.errors import AuthFailed
from tests.api.conftest import Api
from tests.api.harness import LiveServer

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
    key = body["pre_auth_key"]
    assert set(key) == {
        "user",
        "id",
        "key",
        "reusable",
        "ephemeral",
        "used",
        "expiration",
        "created_at",
        "acl_tags",
    }
    match = KEY.match(key["key"])
    assert match is not None
    assert key["user"]["name"] == "alice" and key["reusable"] and key["ephemeral"] and not key["used"]
    assert key["expiration"] == "2099-01-02T03:04:05Z" and key["acl_tags"] == []
    listed = (await api.get("/preauthkey"))[1]["pre_auth_keys"]
    assert [k["key"] for k in listed] == [f"hskey-auth-{match.group(1)}-***"]
    # The key works for registration: the store finds it by its text.
    assert live.store.find_preauth_key(key["key"]).id == int(key["id"])


async def test_tagged_key_without_user(api: Api) -> None:
    status, body = await api.post("/preauthkey", json={"acl_tags": ["tag:server", "tag:web"]})
    assert status == 200
    assert body["pre_auth_key"]["user"] is None and body["pre_auth_key"]["acl_tags"] == [
        "tag:server",
        "tag:web",
    ]


async def test_list_filters_by_user(api: Api) -> None:
    alice, bob = await _user(api, "alice"), await _user(api, "bob")
    await api.post("/preauthkey", json={"user": alice})
    await api.post("/preauthkey", json={"user": bob})
    listed = (await api.get("/preauthkey", params={"user": bob}))[1]["pre_auth_keys"]
    assert [k["user"]["name"] for k in listed] == ["bob"]
    listed = (await api.get("/preauthkey", params={"user": "alice"}))[1]["pre_auth_keys"]
    assert [k["user"]["name"] for k in listed] == ["alice"]
    status, body = await api.get("/preauthkey", params={"user": "nobody"})
    assert status == 404 and "nobody" in body["message"]


async def test_create_refusals(api: Api) -> None:
    user_id = await _user(api)
    cases = [
        ({"user": "99"}, 404, "user"),
        ({"user": user_id, "acl_tags": ["server"]}, 400, "must start with 'tag:'"),
        ({"user": user_id, "acl_tags": ["tag:Server"]}, 400, "lowercase"),
        ({"user": user_id, "acl_tags": ["tag:a b"]}, 400, "spaces"),
        ({"user": user_id, "acl_tags": "tag:a"}, 400, "acl_tags must be a list"),
        ({"user": user_id, "reusable": "yes"}, 400, "reusable must be true or false"),
        ({"user": user_id, "expiration": "tomorrow"}, 400, "RFC 3339"),
        ({"user": user_id, "expiration": "2001-01-01T00:00:00Z"}, 400, "in the past"),
        ({}, 400, "needs a user or at least one tag"),
    ]
    for body, status, message in cases:
        got_status, got = await api.post("/preauthkey", json=body)
        assert (got_status, message in got["message"]) == (status, True), (body, got)


async def test_expire_by_id_and_by_user_and_key(api: Api) -> None:
    user_id = await _user(api)
    await api.post("/preauthkey", json={"user": user_id})
    await api.post("/preauthkey", json={"user": user_id})
    before = [k["expiration"] for k in (await api.get("/preauthkey"))[1]["pre_auth_keys"]]
    status, body = await api.post("/preauthkey/expire", json={"id": "1"})
    assert (status, body) == (200, {})
    masked = (await api.get("/preauthkey"))[1]["pre_auth_keys"][1]["key"]
    status, body = await api.post("/preauthkey/expire", json={"user": "alice", "key": masked})
    assert (status, body) == (200, {})
    after = [k["expiration"] for k in (await api.get("/preauthkey"))[1]["pre_auth_keys"]]
    now = datetime.now(UTC)
    assert all(_parse(stamp) > now for stamp in before)
    assert all(_parse(stamp) <= now for stamp in after)


async def test_expired_key_is_refused_for_registration(api: Api, live: LiveServer) -> None:
    user_id = await _user(api)
    key = (await api.post("/preauthkey", json={"user": user_id}))[1]["pre_auth_key"]
    await api.post("/preauthkey/expire", json={"id": key["id"]})
    with pytest.raises(AuthFailed, match="expired"):
        live.store.find_preauth_key(key["key"])


async def test_expire_and_delete_refusals(api: Api) -> None:
    status, body = await api.post("/preauthkey/expire", json={"id": "7"})
    assert status == 404 and "preauth key 7 not found" in body["message"]
    status, body = await api.post("/preauthkey/expire", json={"id": "x"})
    assert status == 400
    status, body = await api.post("/preauthkey/expire", json={})
    assert status == 400 and "by id" in body["message"]
    status, body = await api.delete("/preauthkey", params={"id": "7"})
    assert status == 404
    status, body = await api.delete("/preauthkey", params={"key": "hskey-auth-000000000000-***"})
    assert status == 404 and "***" in body["message"]


async def test_delete(api: Api, live: LiveServer) -> None:
    user_id = await _user(api)
    key = (await api.post("/preauthkey", json={"user": user_id}))[1]["pre_auth_key"]
    status, body = await api.delete("/preauthkey", params={"id": key["id"]})
    assert (status, body) == (200, {})
    assert live.store.preauth_keys == {}
    assert (await api.get("/preauthkey"))[1]["pre_auth_keys"] == []
