"""The REST API under /api/v1, in Headscale's shape.

Served twice: on the main listener, where every request needs an API key (`Authorization: Bearer`), and on the
unix socket, where the socket's file permissions are the authentication (the local CLI uses it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from pyheadscale.api import gateway
from pyheadscale.api.audit import Audit
from pyheadscale.api.auth import bearer_auth, local_actor
from pyheadscale.api.errors import error_middleware
from pyheadscale.api.openapi import serve_document

if TYPE_CHECKING:
    from pyheadscale.app import Server

MAX_BODY = 1 << 20


def api_application(server: Server, *, trusted: bool) -> web.Application:
    """The /api/v1 sub-application; `trusted` (the unix socket) skips API-key checks."""
    edge = local_actor if trusted else bearer_auth(server)
    middlewares: list[Middleware] = [error_middleware, edge]
    api = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    service = server.service
    api.router.add_routes(gateway.routes(service))
    api.router.add_routes(service.extra_routes())
    api.router.add_routes(Audit(server).routes())
    api.router.add_get("/openapi.json", serve_document, name="openapi")
    return api
