"""The REST API under /api/v1, in Headscale's shape.

Served twice: on the main listener, where every request needs an API key (`Authorization: Bearer`), and on the
unix socket, where the socket's file permissions are the authentication (the local CLI uses it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from pyheadscale.app import Server


def api_application(server: Server, *, trusted: bool) -> web.Application:
    api = web.Application()

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"databaseConnectivity": server.db is not None})

    api.router.add_get("/health", health)
    return api
