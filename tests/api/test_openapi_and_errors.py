"""The OpenAPI document matches the registered routes; every failure is a JSON error in Headscale's shape."""

from __future__ import annotations

import re

from aiohttp import web

from pyheadscale.api.app import api_application
from pyheadscale.api.openapi import document
from tests.api.conftest import Api
from tests.api.harness import LiveServer


def _routes(app: web.Application) -> set[tuple[str, str]]:
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


async def test_every_route_is_documented_and_nothing_else(live: LiveServer) -> None:
    for trusted in (True, False):
        registered = _routes(api_application(live.server, trusted=trusted))
        documented = {(method, path) for path, ops in document()["paths"].items() for method in ops}
        assert registered == documented


def test_path_parameters_are_declared() -> None:
    for path, ops in document()["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for op in ops.values():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (path, op["operationId"])


def test_refs_resolve() -> None:
    doc = document()
    refs = set(re.findall(r"#/components/schemas/(\w+)", str(doc)))
    assert refs <= set(doc["components"]["schemas"])


async def test_document_is_served_without_a_key(tcp: Api) -> None:
    status, body = await tcp.get("/openapi.json")
    assert status == 200 and body["openapi"].startswith("3.") and "/node/{node_id}" in body["paths"]


async def test_health(api: Api) -> None:
    assert await api.get("/health") == (200, {"database_connectivity": True})


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
    key = body["api_key"]
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
