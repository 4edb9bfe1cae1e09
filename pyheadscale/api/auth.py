"""API-key authentication for the network listeners: the REST middleware here, and the guard it shares
with the remote gRPC API (grpc/server.py).

The unix socket is trusted (its file mode is the access control), so only the TCP mount installs this.
Failures say what was wrong with the header but never echo the presented key.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from pyheadscale import audit
from pyheadscale.api.errors import Handler, unauthenticated
from pyheadscale.auth import secret_keys
from pyheadscale.config_limits import RateConfig
from pyheadscale.metrics import Metrics
from pyheadscale.ratelimit import RateLimiter, retry_after_header, source_of
from pyheadscale.state.models import ApiKey
from pyheadscale.state.store import Store

PUBLIC_ROUTES = frozenset({"openapi"})
LOCAL_ACTOR = "cli:unix-socket"


class ApiKeyGuard:
    """Checks presented API keys for one listener (REST or gRPC), and keeps its refusals in bounds.

    Every refusal is counted and audited (at the audit log's refusal rate); the audit entry names the
    presented key by its public prefix at most. Each refusal takes a token from the source's
    `limits.rate.api_auth_failures` bucket; a source with none left is to be turned away before its key is
    even looked at, until the bucket refills.
    """

    def __init__(self, store: Store, rate: RateConfig, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics
        limited = metrics.rate_limited.labels("api_auth_failures").inc
        self._failures = RateLimiter(rate.per_second, rate.burst, on_limited=limited)

    def backoff(self, address: str | None) -> float:
        """Seconds `address` must wait, having used up its failed authentications; 0.0 when it may try."""
        return self._failures.limited(source_of(address))

    async def verify(self, token: str) -> ApiKey | None:
        """The live API key `token` is, with the audit actor set to it; None when it is none."""
        key = await self._store.verify_api_key(token)
        if key is not None:
            audit.actor.set(f"apikey:{key.prefix}")
        return key

    def refuse(self, address: str | None, target: str, reason: str, token: str) -> str:
        """Count, charge and audit one refusal of `token` from `address`; returns `reason`."""
        self._metrics.auth_failures.labels("apikey").inc()
        self._failures.retry_after(source_of(address))
        parts = secret_keys.split_key(token, secret_keys.API_KEY)
        audit.actor.set(f"remote:{audit.clip(str(address), 64)}")
        self._store.audit.record_refusal(
            address, "api.authenticate", target, reason=reason, key_prefix=parts[0] if parts else None
        )
        return reason


@web.middleware
async def local_actor(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On the trusted socket there is no key to name; the audit log records the local CLI as the actor."""
    audit.actor.set(LOCAL_ACTOR)
    return await handler(request)


def bearer_auth(guard: ApiKeyGuard) -> Middleware:
    """A middleware requiring `Authorization: Bearer <api key>` on every route not named in PUBLIC_ROUTES;
    a source out of failed attempts is answered 429 with Retry-After."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.route.name in PUBLIC_ROUTES:
            return await handler(request)
        wait = guard.backoff(request.remote)
        if wait:
            return web.json_response(
                {"code": 8, "message": "too many failed authentications from your address; retry later"},
                status=429,
                headers={"Retry-After": retry_after_header(wait)},
            )
        target = f"api:{request.method} {request.path}"
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            reason = "missing API key: send 'Authorization: Bearer <api key>'"
            raise unauthenticated(guard.refuse(request.remote, target, reason, ""))
        if await guard.verify(token) is None:
            raise unauthenticated(guard.refuse(request.remote, target, "invalid or expired API key", token))
        return await handler(request)

    return middleware
