"""What headplane and headscale-ui read from the REST API is all in our answers, with the types they expect.

The field lists are facts read from their sources (headplane's app/types and api/resources, headscale-ui's
src/lib/common/classes.ts); every view they show is built from these.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from tests.api.conftest import Api
from tests.live_server import LiveServer

STR, BOOL, LIST, OBJ, TIME = "str", "bool", "list", "obj", "time"

NODE_FIELDS = {
    "id": STR,
    "machineKey": STR,
    "nodeKey": STR,
    "discoKey": STR,
    "ipAddresses": LIST,
    "name": STR,
    "user": OBJ,
    "lastSeen": TIME,
    "expiry": TIME,
    "preAuthKey": OBJ,
    "createdAt": TIME,
    "registerMethod": STR,
    "tags": LIST,
    "givenName": STR,
    "online": BOOL,
    "approvedRoutes": LIST,
    "availableRoutes": LIST,
    "subnetRoutes": LIST,
}
USER_FIELDS = {
    "id": STR,
    "name": STR,
    "createdAt": TIME,
    "displayName": STR,
    "email": STR,
    "providerId": STR,
    "provider": STR,
    "profilePicUrl": STR,
}
PREAUTH_FIELDS = {
    "id": STR,
    "key": STR,
    "user": OBJ,
    "reusable": BOOL,
    "ephemeral": BOOL,
    "used": BOOL,
    "expiration": TIME,
    "createdAt": TIME,
    "aclTags": LIST,
}
APIKEY_FIELDS = {"id": STR, "prefix": STR, "expiration": TIME, "createdAt": TIME, "lastSeen": TIME}
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def _check(record: dict[str, Any], fields: dict[str, str], what: str) -> None:
    for name, kind in fields.items():
        assert name in record, f"{what}.{name} missing"
        value = record[name]
        if kind == STR:
            assert isinstance(value, str), (what, name, value)
        elif kind == BOOL:
            assert isinstance(value, bool), (what, name, value)
        elif kind == LIST:
            assert isinstance(value, list), (what, name, value)
        elif kind == OBJ:
            assert value is None or isinstance(value, dict), (what, name, value)
        else:
            assert value is None or RFC3339.fullmatch(value), (what, name, value)


async def test_every_field_the_uis_read_is_served(api: Api, live: LiveServer) -> None:
    user = (await api.post("/user", json={"name": "alice", "displayName": "Alice", "pictureUrl": ""}))[1]
    _check(user["user"], USER_FIELDS, "User")
    key = (await api.post("/preauthkey", json={"user": user["user"]["id"], "reusable": True}))[1]
    _check(key["preAuthKey"], PREAUTH_FIELDS, "PreAuthKey")
    await live.add_node("laptop", user_id=1, routes=["10.0.0.0/8"])
    nodes = (await api.get("/node"))[1]["nodes"]
    _check(nodes[0], NODE_FIELDS, "Node")
    _check(nodes[0]["user"], USER_FIELDS, "Node.user")
    _check(nodes[0]["preAuthKey"], PREAUTH_FIELDS, "Node.preAuthKey")
    await api.post("/apikey", json={})
    _check((await api.get("/apikey"))[1]["apiKeys"][0], APIKEY_FIELDS, "ApiKey")
    _check((await api.get("/preauthkey"))[1]["preAuthKeys"][0], PREAUTH_FIELDS, "PreAuthKey (listed)")
    _check((await api.get("/user"))[1]["users"][0], USER_FIELDS, "User (listed)")
    policy = (await api.get("/policy"))[1]
    assert isinstance(policy["policy"], str) and (
        policy["updatedAt"] is None or RFC3339.fullmatch(policy["updatedAt"])
    )


async def test_headplane_capability_gate_sees_a_current_headscale(live: LiveServer) -> None:
    """headplane reads /version as semver and turns on flat tags and key ids from 0.28.0 on."""
    async with aiohttp.ClientSession() as session, session.get(live.url + "/version") as resp:
        version = (await resp.json())["version"]
    match = re.match(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$", version)
    assert match is not None and (int(match[1]), int(match[2])) >= (0, 28), version


async def test_register_as_headplane_sends_it(api: Api, live: LiveServer) -> None:
    """headplane sends user and key both in the query string and the body; the query is what counts."""
    await api.post("/user", json={"name": "alice"})
    status, body = await api.post(
        "/node/register", params={"user": "alice", "key": "nope"}, json={"user": "alice", "key": "nope"}
    )
    # Read from the query: the unknown auth id is what is refused, not a missing user.
    assert status == 404 and "no login is waiting" in body["message"], body
