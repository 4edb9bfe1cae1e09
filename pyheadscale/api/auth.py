"""API-key authentication for the network listener.

The unix socket is trusted (its file mode is the access control), so only the TCP mount installs this.
Failures say what was wrong with the header but never echo the presented key.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from pyheadscale import audit
from pyheadscale.api.errors import Handler, unauthenticated
from pyheadscale.state.store import Store

PUBLIC_ROUTES = frozenset({"openapi"})
LOCAL_ACTOR = "cli:unix-socket"


@web.middleware
async def local_actor(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On the trusted socket there is no key to name; the audit log records the local CLI as the actor."""
    audit.actor.set(LOCAL_ACTOR)
    return await handler(request)


def bearer_auth(store: Callable[[], Store | None]) -> Middleware:
    """A middleware requiring `Authorization: Bearer <api key>` on every route not named in PUBLIC_ROUTES."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.route.name in PUBLIC_ROUTES:
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated("missing API key: send 'Authorization: Bearer <api key>'")
        current = store()
        key = current.authenticate_api_key(token) if current is not None else None
        if key is None:
            raise unauthenticated("invalid or expired API key")
        audit.actor.set(f"apikey:{key.prefix}")
        return await handler(request)

    return middleware
