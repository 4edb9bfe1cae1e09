"""The authorization matrix, REST half: every route under /api/v1 x every caller, allowed or refused.

The routes are read off the API application itself, so a route added later is in the matrix without anyone
remembering to add it. Allowed means the request gets past authentication (its answer may still be a 400 or
404 for the dummy arguments); refused means 401 naming the API key, with nothing changed.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pyheadscale.api.app import api_application
from pyheadscale.api.auth import PUBLIC_ROUTES
from tests.api.conftest import Api
from tests.live_server import LiveServer


def api_routes() -> list[tuple[str, str, str]]:
    """(method, path template, route name) of every /api/v1 route, read off the API application of a
    server started for the purpose (both mounts have the same routes; the trusted one needs no key)."""

    async def read(data_dir: Path) -> set[tuple[str, str, str]]:
        live = await LiveServer(data_dir).start()
        try:
            app = api_application(live.server.components.service, None)
        finally:
            await live.stop()
        return {
            (r.method, r.resource.canonical, r.name or "")
            for r in app.router.routes()
            if r.method != "HEAD" and r.resource is not None
        }

    data_dir = Path(tempfile.mkdtemp(prefix="authz-routes-"))
    try:
        return sorted(asyncio.run(read(data_dir)))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


ROUTES = api_routes()
ALLOWED_CALLERS = ("valid-api-key", "unix-socket")
REFUSED_CALLERS = ("expired-api-key", "deleted-api-key", "no-credential", "oidc-user", "node-key")


def route_id(route: tuple[str, str, str]) -> str:
    return f"{route[0]} {route[1]}"


class World:
    """Objects the dummy arguments name: a user, a node, an API key."""

    def __init__(self, live: LiveServer) -> None:
        self.live = live
        self.params: dict[str, str] = {}
        self.tokens: dict[str, str] = {}

    async def build(self) -> World:
        store = self.live.store
        user = await store.create_user("alice")
        node = await self.live.add_node("laptop", user_id=user.id)
        valid, valid_text = await store.create_api_key(None)
        expired, expired_text = await store.create_api_key(None)
        await store.expire_api_key(expired.id)
        deleted, deleted_text = await store.create_api_key(None)
        await store.delete_api_key(deleted.id)
        self.params = {
            "node_id": str(node.id),
            "new_name": "renamed",
            "old_id": str(user.id),
            "id": str(user.id),
            "prefix": valid.prefix,
        }
        self.tokens = {
            "valid-api-key": valid_text,
            "expired-api-key": expired_text,
            "deleted-api-key": deleted_text,
            "node-key": node.node_key,
        }
        return self

    def path(self, template: str) -> str:
        return template.format(**self.params)

    def headers(self, caller: str) -> dict[str, str]:
        if caller == "oidc-user":
            # Signed in at the IdP and holding a login cookie: that is no credential for the API.
            return {"Cookie": "pyhs_oidc_" + "x" * 32 + "=session"}
        token = self.tokens.get(caller)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def state(self) -> Any:
        store = self.live.store
        return (
            sorted(store.users),
            sorted((n.id, n.given_name, n.expiry, tuple(n.tags)) for n in store.nodes.values()),
            sorted(store.preauth_keys),
            sorted((k.id, k.expiration) for k in store.api_keys.values()),
        )


async def call(api: Api, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] | None = {} if method in ("POST", "PUT") else None
    return await api.call(method, path, json=body, headers=headers)


def test_routes_are_found() -> None:
    names = {route_id(r) for r in ROUTES}
    assert {"GET /node", "DELETE /node/{node_id}", "POST /apikey", "PUT /policy"} <= names
    assert len(ROUTES) >= 25


@pytest.mark.parametrize("caller", ALLOWED_CALLERS)
@pytest.mark.parametrize("route", ROUTES, ids=route_id)
async def test_allowed_callers_get_past_authentication(
    live: LiveServer, api: Api, tcp: Api, route: tuple[str, str, str], caller: str
) -> None:
    world = await World(live).build()
    method, template, _ = route
    client = api if caller == "unix-socket" else tcp
    status, body = await call(client, method, world.path(template), world.headers(caller))
    assert status not in (401, 403) and status < 500, (status, body)


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
async def test_refused_callers_get_401_and_change_nothing(
    live: LiveServer, tcp: Api, route: tuple[str, str, str]
) -> None:
    world = await World(live).build()
    method, template, name = route
    for caller in REFUSED_CALLERS:
        before = world.state()
        status, body = await call(tcp, method, world.path(template), world.headers(caller))
        if name in PUBLIC_ROUTES:
            assert status == 200, (caller, status, body)
            continue
        assert status == 401, (caller, status, body)
        assert "API key" in body["message"], (caller, body)
        assert world.state() == before, caller


async def test_unix_socket_is_not_reachable_over_tcp(live: LiveServer) -> None:
    """The trusted mount is the socket only: the same path over TCP without a key is refused."""
    async with aiohttp.ClientSession() as http, http.get(live.url + "/api/v1/user") as resp:
        assert resp.status == 401
