"""Prometheus metrics, served on `metrics_listen_addr` at /metrics.

Each server has its own registry, so several servers in one process (tests) never collide. Gauges that
describe state (nodes, online nodes, open map streams) are read from the store when scraped rather than kept
in step by hand.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pyheadscale.state.store import Store

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.nodes = Gauge("pyheadscale_nodes", "Registered nodes", registry=r)
        self.online = Gauge("pyheadscale_nodes_online", "Nodes with an open map stream", registry=r)
        self.map_streams = Gauge("pyheadscale_map_streams", "Open map streams", registry=r)
        self.map_messages = Counter("pyheadscale_map_messages", "MapResponses sent", ["kind"], registry=r)
        self.map_bytes = Counter(
            "pyheadscale_map_bytes", "Bytes of MapResponses sent (after compression)", registry=r
        )
        self.registrations = Counter(
            "pyheadscale_registrations", "Registration requests", ["outcome"], registry=r
        )
        self.auth_failures = Counter(
            "pyheadscale_auth_failures", "Refused authentication attempts", ["method"], registry=r
        )
        self.rate_limited = Counter(
            "pyheadscale_rate_limited",
            "Requests refused by a per-source rate limit (429)",
            ["limit"],
            registry=r,
        )
        self.connections_refused = Counter(
            "pyheadscale_connections_refused",
            "Connections refused or closed by a connection limit or timeout",
            ["reason"],
            registry=r,
        )
        self.audit_suppressed = Counter(
            "pyheadscale_audit_suppressed",
            "Audit entries for unauthenticated refusals dropped by the audit rate limit",
            registry=r,
        )
        self.request_seconds = Histogram(
            "pyheadscale_http_request_seconds", "HTTP request latency", ["path", "status"], registry=r
        )

    def bind_store(self, store: Store, streams: Callable[[], int]) -> None:
        self.nodes.set_function(lambda: len(store.nodes))
        self.online.set_function(lambda: sum(1 for n in store.nodes if store.is_online(n)))
        self.map_streams.set_function(streams)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Time every plain HTTP request by its route (a raw path would explode the label set)."""
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route = request.match_info.route.resource
            path = route.canonical if route is not None else "unmatched"
            if status != 101:  # upgraded connections live for hours: their duration is no request latency
                self.request_seconds.labels(path, str(status)).observe(time.perf_counter() - started)

    async def handle(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
