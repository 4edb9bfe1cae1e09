"""/apikey and API-key authentication on the TCP listener; keys are stored as prefix + hash only."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from datetime import UTC, datetime

from tests.api.conftest import Api
from tests.live_server import LiveServer

KEY = re.compile(r"^hskey-api-([0-9a-f]{12})-([0-9a-f]{64})$")


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _create(api: Api, **body: str) -> str:
    status, result = await api.post("/apikey", json=body)
    assert status == 200
    return str(result["apiKey"])


async def test_create_list_and_shape(api: Api) -> None:
    key = await _create(api, expiration="2099-01-01T00:00:00Z")
    match = KEY.match(key)
    assert match is not None
    status, body = await api.get("/apikey")
    assert status == 200
    (listed,) = body["apiKeys"]
    assert listed == {
        "id": "1",
        "prefix": f"hskey-api-{match.group(1)}-***",
        "expiration": "2099-01-01T00:00:00Z",
        "createdAt": listed["createdAt"],
        "lastSeen": None,
    }
    assert match.group(2) not in str(body)


async def test_default_lifetime_is_ninety_days(api: Api) -> None:
    await _create(api)
    expiration = (await api.get("/apikey"))[1]["apiKeys"][0]["expiration"]
    days = (datetime.fromisoformat(expiration.replace("Z", "+00:00")) - datetime.now(UTC)).days
    assert 88 <= days <= 90


async def test_only_prefix_and_hash_are_stored(api: Api, live: LiveServer) -> None:
    key = await _create(api)
    match = KEY.match(key)
    assert match is not None
    db_file = live.server.config.path(live.server.config.database.sqlite.path)
    with sqlite3.connect(db_file) as conn:
        rows = conn.execute("SELECT prefix, secret_hash FROM api_keys").fetchall()
        dump = "\n".join(conn.iterdump())
    assert rows == [(match.group(1), hashlib.sha256(match.group(2).encode()).digest())]
    assert match.group(2) not in dump and key not in dump


async def test_tcp_listener_requires_a_valid_key(api: Api, tcp: Api) -> None:
    status, body = await tcp.get("/user")
    assert status == 401 and body["code"] == 16 and "missing API key" in body["message"]
    status, body = await tcp.get("/user", headers={"Authorization": "Basic abc"})
    assert status == 401
    key = await _create(api)
    wrong = key[:-1] + ("0" if key[-1] != "0" else "1")
    status, body = await tcp.get("/user", headers=_bearer(wrong))
    assert status == 401 and body["message"] == "invalid or expired API key"
    assert wrong not in str(body)
    status, body = await tcp.get("/user", headers=_bearer("hskey-api-nonsense"))
    assert status == 401
    status, body = await tcp.get("/user", headers=_bearer(key))
    assert (status, body) == (200, {"users": []})
    status, body = await tcp.post("/user", json={"name": "remote"}, headers=_bearer(key))
    assert status == 200 and body["user"]["name"] == "remote"


async def test_unknown_paths_on_tcp_still_need_a_key(tcp: Api) -> None:
    status, body = await tcp.get("/nothing-here")
    assert status == 401 and body["code"] == 16


async def test_expired_key_is_refused(api: Api, tcp: Api) -> None:
    key = await _create(api)
    prefix = KEY.match(key).group(1)  # type: ignore[union-attr]
    assert (await tcp.get("/health", headers=_bearer(key)))[0] == 200
    assert (await api.post("/apikey/expire", json={"prefix": prefix})) == (200, {})
    status, body = await tcp.get("/health", headers=_bearer(key))
    assert status == 401 and "expired" in body["message"]


async def test_expire_by_id_or_masked_prefix(api: Api, tcp: Api) -> None:
    first, second = await _create(api), await _create(api)
    assert (await api.post("/apikey/expire", json={"id": "1"})) == (200, {})
    masked = (await api.get("/apikey"))[1]["apiKeys"][1]["prefix"]
    assert (await api.post("/apikey/expire", json={"prefix": masked})) == (200, {})
    for key in (first, second):
        assert (await tcp.get("/health", headers=_bearer(key)))[0] == 401


async def test_expire_refusals(api: Api) -> None:
    await _create(api)
    prefix = (await api.get("/apikey"))[1]["apiKeys"][0]["prefix"]
    for body, status, message in (
        ({}, 400, "must provide id or prefix"),
        ({"id": "1", "prefix": prefix}, 400, "not both"),
        ({"id": "9"}, 404, "API key 9 not found"),
        ({"prefix": "abcabcabcabc"}, 404, "not found"),
        ({"id": "x"}, 400, "id"),
    ):
        got_status, got = await api.post("/apikey/expire", json=body)
        assert got_status == status and message in got["message"], (body, got)
    status, body = await api.post("/apikey", json={"expiration": "2000-01-01T00:00:00Z"})
    assert status == 400 and "past" in body["message"]


async def test_delete(api: Api, tcp: Api, live: LiveServer) -> None:
    key = await _create(api)
    prefix = KEY.match(key).group(1)  # type: ignore[union-attr]
    assert (await api.delete(f"/apikey/{prefix}")) == (200, {})
    assert live.store.api_keys == {}
    assert (await tcp.get("/health", headers=_bearer(key)))[0] == 401
    status, body = await api.delete(f"/apikey/{prefix}")
    assert status == 404 and prefix in body["message"]


async def test_delete_names_the_key_by_prefix_or_id_never_both(api: Api, live: LiveServer) -> None:
    """The path always carries a prefix; `?id=` as well is refused, as Headscale's DeleteApiKey does."""
    prefix = KEY.match(await _create(api)).group(1)  # type: ignore[union-attr]
    status, body = await api.delete(f"/apikey/{prefix}", params={"id": "1"})
    assert (status, body["message"]) == (400, "provide either id or prefix, not both")
    status, body = await api.delete(f"/apikey/hskey-api-{prefix}-***")
    assert (status, body) == (200, {}) and live.store.api_keys == {}


async def test_keys_survive_a_restart(live: LiveServer) -> None:
    record, key = await live.store.create_api_key(None)
    await live.restart()
    assert live.store.authenticate_api_key(key) is not None
    assert live.store.api_keys[record.id].prefix == record.prefix
