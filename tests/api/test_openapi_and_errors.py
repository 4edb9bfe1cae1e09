"""The OpenAPI document matches the registered routes; every failure is a JSON error in Headscale's shape."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from aiohttp import web

from pyheadscale import __version__
from pyheadscale.api.app import api_application
from pyheadscale.api.auth import ApiKeyGuard
from pyheadscale.api.openapi import document
from tests.api.conftest import Api
from tests.live_server import LiveServer

# Facts read from Headscale v0.29.2's published API description (operation id -> method, path).
HEADSCALE_V0_29_OPERATIONS = {
    "HeadscaleService_CreateUser": ("post", "/api/v1/user"),
    "HeadscaleService_RenameUser": ("post", "/api/v1/user/{oldId}/rename/{newName}"),
    "HeadscaleService_DeleteUser": ("delete", "/api/v1/user/{id}"),
    "HeadscaleService_ListUsers": ("get", "/api/v1/user"),
    "HeadscaleService_CreatePreAuthKey": ("post", "/api/v1/preauthkey"),
    "HeadscaleService_ExpirePreAuthKey": ("post", "/api/v1/preauthkey/expire"),
    "HeadscaleService_DeletePreAuthKey": ("delete", "/api/v1/preauthkey"),
    "HeadscaleService_ListPreAuthKeys": ("get", "/api/v1/preauthkey"),
    "HeadscaleService_DebugCreateNode": ("post", "/api/v1/debug/node"),
    "HeadscaleService_GetNode": ("get", "/api/v1/node/{nodeId}"),
    "HeadscaleService_SetTags": ("post", "/api/v1/node/{nodeId}/tags"),
    "HeadscaleService_SetApprovedRoutes": ("post", "/api/v1/node/{nodeId}/approve_routes"),
    "HeadscaleService_RegisterNode": ("post", "/api/v1/node/register"),
    "HeadscaleService_DeleteNode": ("delete", "/api/v1/node/{nodeId}"),
    "HeadscaleService_ExpireNode": ("post", "/api/v1/node/{nodeId}/expire"),
    "HeadscaleService_RenameNode": ("post", "/api/v1/node/{nodeId}/rename/{newName}"),
    "HeadscaleService_ListNodes": ("get", "/api/v1/node"),
    "HeadscaleService_BackfillNodeIPs": ("post", "/api/v1/node/backfillips"),
    "HeadscaleService_AuthRegister": ("post", "/api/v1/auth/register"),
    "HeadscaleService_AuthApprove": ("post", "/api/v1/auth/approve"),
    "HeadscaleService_AuthReject": ("post", "/api/v1/auth/reject"),
    "HeadscaleService_CreateApiKey": ("post", "/api/v1/apikey"),
    "HeadscaleService_ExpireApiKey": ("post", "/api/v1/apikey/expire"),
    "HeadscaleService_ListApiKeys": ("get", "/api/v1/apikey"),
    "HeadscaleService_DeleteApiKey": ("delete", "/api/v1/apikey/{prefix}"),
    "HeadscaleService_GetPolicy": ("get", "/api/v1/policy"),
    "HeadscaleService_SetPolicy": ("put", "/api/v1/policy"),
    "HeadscaleService_CheckPolicy": ("post", "/api/v1/policy/check"),
    "HeadscaleService_Health": ("get", "/api/v1/health"),
}


def _routes(app: web.Application) -> set[tuple[str, str]]:
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path.removeprefix("/api/v1")) for path, ops in doc["paths"].items() for method in ops}


def _aiohttp_path(path: str) -> str:
    """`/node/{nodeId}` as aiohttp's route `/node/{node_id}` (JSON names back to proto names)."""
    return re.sub(r"{(\w+)}", lambda m: "{" + re.sub(r"([A-Z])", r"_\1", m[1]).lower() + "}", path)


async def test_every_route_is_documented_and_nothing_else(live: LiveServer) -> None:
    documented = {(method, _aiohttp_path(path)) for method, path in _documented(document())}
    server = live.server
    guard = ApiKeyGuard(live.store, server.config.limits.rate.api_auth_failures, server.metrics)
    for mount_guard in (None, guard):
        registered = _routes(api_application(server.components.service, mount_guard))
        registered -= {("get", "/openapi.json")}
        assert registered == documented


def test_headscale_operations_are_all_there() -> None:
    """Each rpc of Headscale v0.29.2's REST mapping, at its path, method and operation id."""
    doc = document()
    operations = {
        op["operationId"]: (method, path)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if op["operationId"].startswith("HeadscaleService_")
    }
    assert operations == HEADSCALE_V0_29_OPERATIONS


def test_path_parameters_are_declared() -> None:
    for path, ops in document()["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for op in ops.values():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (path, op["operationId"])


def test_refs_resolve_and_definitions_use_json_names() -> None:
    doc = document()
    refs = set(re.findall(r"#/definitions/(\w+)", str(doc)))
    assert refs <= set(doc["definitions"])
    node = doc["definitions"]["v1Node"]["properties"]
    assert node["id"] == {"type": "string", "format": "uint64"}
    assert node["lastSeen"] == {"type": "string", "format": "date-time"}
    assert node["registerMethod"] == {"$ref": "#/definitions/v1RegisterMethod"}
    assert "machine_key" not in node and "machineKey" in node


async def test_document_is_served_without_a_key(live: LiveServer, tcp: Api) -> None:
    status, body = await tcp.get("/openapi.json")
    assert status == 200 and body["swagger"] == "2.0" and "/api/v1/node/{nodeId}" in body["paths"]
    async with aiohttp.ClientSession() as session:
        async with session.get(live.url + "/swagger/v1/openapiv2.json") as resp:
            assert resp.status == 200 and (await resp.json()) == body
        async with session.get(live.url + "/swagger") as resp:
            page = await resp.text()
            assert resp.status == 200 and "/swagger/v1/openapiv2.json" in page


async def test_version(live: LiveServer) -> None:
    """`GET /version` answers as Headscale's does: version, commit, buildTime, go{...}, dirty."""
    async with aiohttp.ClientSession() as session, session.get(live.url + "/version") as resp:
        body = await resp.json()
    assert resp.status == 200 and set(body) == {"version", "commit", "buildTime", "go", "dirty"}
    # Read as semver by tools that gate on Headscale's version (headplane): the release we answer as,
    # our own version as build metadata.
    assert body["version"] == f"v0.29.2+pyheadscale.{__version__}" and set(body["go"]) == {
        "version",
        "os",
        "arch",
    }
    assert re.fullmatch(
        r"v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?", body["version"]
    )
    assert body["dirty"] is False


async def test_health(api: Api) -> None:
    assert await api.get("/health") == (200, {"databaseConnectivity": True})


async def test_unknown_path_and_wrong_method_are_json_errors(api: Api) -> None:
    status, body = await api.get("/no/such/thing")
    assert status == 404 and body == {"code": 5, "message": "no such API endpoint", "details": []}
    status, body = await api.call("PUT", "/user")
    assert status == 405 and body["code"] == 12 and "PUT" in body["message"]


async def test_bodies_that_are_not_json_objects(api: Api) -> None:
    for data in ("[1, 2]", "nope", '"a string"'):
        status, body = await api.post("/user", data=data)
        assert status == 400 and set(body) == {"code", "message", "details"}


async def test_oversized_body_is_refused(api: Api) -> None:
    status, body = await api.post("/user", data="x" * (2 << 20))
    assert status == 400 and "too large" in body["message"]


async def test_audit_names_the_actor_at_the_edge(api: Api, tcp: Api, live: LiveServer) -> None:
    await api.post("/user", json={"name": "local"})
    status, body = await api.post("/apikey", json={})
    key = body["apiKey"]
    prefix = key.split("-")[2]
    await tcp.post("/user", json={"name": "remote"}, headers={"Authorization": f"Bearer {key}"})
    status, body = await api.get("/audit", params={"action": "user.create"})
    assert status == 200
    assert [(e["actor"], e["target"]) for e in body["entries"]] == [
        ("cli:unix-socket", "user:1"),
        (f"apikey:{prefix}", "user:2"),
    ]
    entries = (await api.get("/audit", params={"action": "apikey.create"}))[1]["entries"]
    assert entries[0]["prefix"] == prefix and key.split("-")[3] not in str(entries)
    status, body = await api.get("/audit", params={"limit": "0"})
    assert status == 400 and "limit" in body["message"]
