"""The REST API under /api/v1, in Headscale's shape.

Served twice: on the main listener, where every request needs an API key (`Authorization: Bearer`), and on the
unix socket, where the socket's file permissions are the authentication (the local CLI uses it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from pyheadscale.api.apikeys import ApiKeys
from pyheadscale.api.audit import Audit
from pyheadscale.api.auth import bearer_auth, local_actor
from pyheadscale.api.authflow import AuthFlow
from pyheadscale.api.debug import Debug
from pyheadscale.api.errors import error_middleware
from pyheadscale.api.health import Health
from pyheadscale.api.nodes import Nodes
from pyheadscale.api.openapi import serve_document
from pyheadscale.api.policy import Policy
from pyheadscale.api.preauthkeys import PreAuthKeys
from pyheadscale.api.users import Users

if TYPE_CHECKING:
    from pyheadscale.app import Server

MAX_BODY = 1 << 20


def api_application(server: Server, *, trusted: bool) -> web.Application:
    """The /api/v1 sub-application; `trusted` (the unix socket) skips API-key checks."""
    edge = local_actor if trusted else bearer_auth(server)
    middlewares: list[Middleware] = [error_middleware, edge]
    api = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    resources = (Health, Users, Nodes, PreAuthKeys, ApiKeys, Audit, AuthFlow, Policy, Debug)
    for resource in (cls(server) for cls in resources):
        api.router.add_routes(resource.routes())
    api.router.add_get("/openapi.json", serve_document, name="openapi")
    return api
