"""API-key authentication for the network listener.

The unix socket is trusted (its file mode is the access control), so only the TCP mount installs this.
Failures say what was wrong with the header but never echo the presented key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from pyheadscale import audit
from pyheadscale.api.errors import ApiError, Handler, unauthenticated
from pyheadscale.auth import secret_keys

if TYPE_CHECKING:
    from pyheadscale.app import Server

PUBLIC_ROUTES = frozenset({"openapi"})
LOCAL_ACTOR = "cli:unix-socket"


@web.middleware
async def local_actor(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On the trusted socket there is no key to name; the audit log records the local CLI as the actor."""
    audit.actor.set(LOCAL_ACTOR)
    return await handler(request)


def bearer_auth(server: Server) -> Middleware:
    """A middleware requiring `Authorization: Bearer <api key>` on every route not named in PUBLIC_ROUTES.

    Every refusal is counted and audited; the audit entry names the presented key by its public prefix at
    most.
    """

    def refuse(request: web.Request, reason: str, token: str) -> ApiError:
        server.metrics.auth_failures.labels("apikey").inc()
        if server.store is not None:
            parts = secret_keys.split_key(token, secret_keys.API_KEY)
            audit.actor.set(f"remote:{request.remote}")
            server.store.audit.record(
                "api.authenticate",
                f"api:{request.method} {request.path}",
                "denied",
                reason=reason,
                key_prefix=parts[0] if parts else None,
            )
        return unauthenticated(reason)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.route.name in PUBLIC_ROUTES:
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise refuse(request, "missing API key: send 'Authorization: Bearer <api key>'", "")
        key = await server.store.verify_api_key(token) if server.store is not None else None
        if key is None:
            raise refuse(request, "invalid or expired API key", token)
        audit.actor.set(f"apikey:{key.prefix}")
        return await handler(request)

    return middleware
