"""API-key authentication for the network listener.

The unix socket is trusted (its file mode is the access control), so only the TCP mount installs this.
Failures say what was wrong with the header but never echo the presented key.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from pyheadscale import audit
from pyheadscale.api.errors import ApiError, Handler, unauthenticated
from pyheadscale.auth import secret_keys
from pyheadscale.ratelimit import RateLimiter, retry_after_header, source_of

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

    Every refusal is counted and audited (at the audit log's refusal rate); the audit entry names the
    presented key by its public prefix at most. Each refusal takes a token from the source's
    `limits.rate.api_auth_failures` bucket; a source with none left is answered 429 with Retry-After,
    before its key is even looked at, until the bucket refills.
    """

    @functools.cache
    def failures() -> RateLimiter:
        """Made at the first request: the routes are also built without a server, to be listed."""
        rate = server.config.limits.rate.api_auth_failures
        limited = server.metrics.rate_limited.labels("api_auth_failures").inc
        return RateLimiter(rate.per_second, rate.burst, on_limited=limited)

    def refuse(request: web.Request, reason: str, token: str) -> ApiError:
        server.metrics.auth_failures.labels("apikey").inc()
        failures().retry_after(source_of(request.remote))
        if server.store is not None:
            parts = secret_keys.split_key(token, secret_keys.API_KEY)
            audit.actor.set(f"remote:{audit.clip(str(request.remote), 64)}")
            server.store.audit.record_refusal(
                request.remote,
                "api.authenticate",
                f"api:{request.method} {request.path}",
                reason=reason,
                key_prefix=parts[0] if parts else None,
            )
        return unauthenticated(reason)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.route.name in PUBLIC_ROUTES:
            return await handler(request)
        wait = failures().limited(source_of(request.remote))
        if wait:
            return web.json_response(
                {"code": 8, "message": "too many failed authentications from your address; retry later"},
                status=429,
                headers={"Retry-After": retry_after_header(wait)},
            )
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise refuse(request, "missing API key: send 'Authorization: Bearer <api key>'", "")
        key = await server.store.verify_api_key(token) if server.store is not None else None
        if key is None:
            raise refuse(request, "invalid or expired API key", token)
        audit.actor.set(f"apikey:{key.prefix}")
        return await handler(request)

    return middleware
