"""The public HTTP listener's limits: how many connections, from where, and how slow they may be.

Every TS2021 and DERP session starts as a connection to this listener, so these bounds hold for all of them:
- at most `limits.connections.max` open connections, and `per_source` from one address (an IPv6 /64 counts
  as one), refused past that with a 503 and closed;
- a connection must complete its request head within `header_timeout` of connecting or of its previous
  response (aiohttp's keep-alive timer, which also runs before the first request), or it is closed;
- a request body must arrive within `request_timeout`, or the request is answered 408.
Upgraded connections (TS2021, DERP) are then bounded by their own protocols' timeouts.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestHandler

from pyheadscale.config_limits import ConnectionLimits
from pyheadscale.ratelimit import source_of

log = logging.getLogger(__name__)

Refused = Callable[[str], None]

# File descriptors kept for everything that is not a client connection (database, logs, DERP mesh, ...).
RESERVED_FDS = 128
# Connections the kernel may hold completed but not yet accepted (clamped to net.core.somaxconn). aiohttp's
# default of 128 overflowed in a restart storm (636 ListenOverflows while 1,000 nodes reconnected): each
# overflow drops a SYN or a handshake's last ACK, and the client waits out a retransmission (1 s, 3 s, ...)
# for a server that had room for it a moment later.
LISTEN_BACKLOG = 4096


def connection_capacity(configured: int) -> int:
    """`configured`, or fewer if the process may not open that many files: first raising the soft
    RLIMIT_NOFILE to the hard limit (as Go's runtime does for Headscale), then keeping RESERVED_FDS."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return configured
    capacity = max(1, min(configured, soft - RESERVED_FDS))
    if capacity < configured:
        log.warning(
            "limits.connections.max is %d but the file descriptor limit is %d: at most %d connections",
            configured,
            soft,
            capacity,
        )
    return capacity


_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 10\r\nContent-Type: text/plain\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
)


def _refusal(text: bytes) -> bytes:
    return _REFUSAL % (len(text), text)


class GuardedServer(web.Server):
    """aiohttp's low-level server, counting connections per source and refusing those over the limits."""

    def __init__(
        self, limits: ConnectionLimits, on_refused: Refused | None, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._capacity = connection_capacity(limits.max)
        self._on_refused = on_refused
        self._sources: dict[RequestHandler, str] = {}
        self._per_source: dict[str, int] = {}

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        source = source_of(peer[0] if isinstance(peer, tuple) and peer else None)
        if len(self._sources) >= self._capacity:
            self._refuse(transport, "max", b"the server has too many open connections; retry later\n")
            return
        if self._per_source.get(source, 0) >= self._limits.per_source:
            self._refuse(transport, "per_source", b"too many open connections from your address\n")
            return
        self._sources[handler] = source
        self._per_source[source] = self._per_source.get(source, 0) + 1
        super().connection_made(handler, transport)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        source = self._sources.pop(handler, None)
        if source is not None:
            left = self._per_source[source] - 1
            if left:
                self._per_source[source] = left
            else:
                del self._per_source[source]
        super().connection_lost(handler, exc)

    def _refuse(self, transport: asyncio.Transport, reason: str, text: bytes) -> None:
        if self._on_refused is not None:
            self._on_refused(reason)
        transport.write(_refusal(text))
        transport.close()


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose server is a GuardedServer, with the header timeout as aiohttp's keep-alive."""

    def __init__(
        self, app: web.Application, limits: ConnectionLimits, on_refused: Refused | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("keepalive_timeout", limits.header_timeout.total_seconds())
        super().__init__(app, **kwargs)
        self._limits = limits
        self._on_refused = on_refused

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return GuardedServer(
            self._limits,
            self._on_refused,
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            **plain._kwargs,
        )


def request_deadline(limits: ConnectionLimits) -> Middleware:
    """Read each request's body within `request_timeout` (a body trickled byte by byte is answered 408)."""
    timeout = limits.request_timeout.total_seconds()

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.body_exists:
            try:
                await asyncio.wait_for(request.read(), timeout)
            except TimeoutError:
                log.info("request body from %s not complete within %ss", request.remote, timeout)
                refused = web.Response(status=408, text=f"request body not complete within {timeout:g}s\n")
                refused.force_close()
                return refused
        response: web.StreamResponse = await handler(request)
        return response

    return middleware
