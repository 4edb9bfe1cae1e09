"""The REST API under /api/v1, in Headscale's shape.

Served twice: on the main listener, where every request needs an API key (`Authorization: Bearer`), and on the
unix socket, where the socket's file permissions are the authentication (the local CLI uses it).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from pyheadscale.api import gateway
from pyheadscale.api.auth import ApiKeyGuard, bearer_auth, local_actor
from pyheadscale.api.errors import error_middleware
from pyheadscale.api.openapi import serve_document
from pyheadscale.api.service import HeadscaleService

MAX_BODY = 1 << 20


def api_application(service: HeadscaleService, guard: ApiKeyGuard | None) -> web.Application:
    """The /api/v1 sub-application answering through `service`; with no `guard` (the trusted unix socket)
    no API key is asked for."""
    edge = local_actor if guard is None else bearer_auth(guard)
    middlewares: list[Middleware] = [error_middleware, edge]
    api = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    api.router.add_routes(gateway.routes(service))
    api.router.add_routes(service.extra_routes())
    api.router.add_get("/openapi.json", serve_document, name="openapi")
    return api
