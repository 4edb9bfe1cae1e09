"""Prometheus metrics, served on `metrics_listen_addr` at /metrics.

Each server has its own registry, so several servers in one process (tests) never collide. Gauges that
describe state (nodes, online nodes, open map streams) are read from the store when scraped rather than kept
in step by hand.

Headscale's metric names are served too, with its labels, so dashboards and alerts written for Headscale
v0.29 keep working: `headscale_mapresponse_*`, `headscale_nodestore_nodes`, and the `http_requests_*` family
of its HTTP middleware. Headscale's nodestore timing histograms describe its Go internals and have no
counterpart here.
"""

from __future__ import annotations

import asyncio
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
        # Headscale's names (hscontrol/metrics.go, mapper/batcher.go, state/node_store.go; go-chi/metrics).
        self.hs_map_sent = Counter(
            "headscale_mapresponse_sent", "MapResponses sent to clients", ["status", "type"], registry=r
        )
        self.hs_map_generated = Counter(
            "headscale_mapresponse_generated",
            "MapResponses generated, by type",
            ["response_type"],
            registry=r,
        )
        self._map_counters: dict[str, tuple[Counter, ...]] = {}
        self.hs_endpoint_updates = Counter(
            "headscale_mapresponse_endpoint_updates",
            "Endpoint (lite) updates received",
            ["status"],
            registry=r,
        )
        self.hs_map_ended = Counter(
            "headscale_mapresponse_ended", "Map sessions ended", ["reason"], registry=r
        )
        self.hs_nodes = Gauge("headscale_nodestore_nodes", "Number of nodes", registry=r)
        self.http_requests = Counter(
            "http_requests",
            "Incoming HTTP requests",
            ["host", "status", "endpoint", "proto", "client_aborted"],
            registry=r,
        )
        self.http_inflight = Gauge(
            "http_requests_inflight", "Incoming HTTP requests in flight", ["host", "proto"], registry=r
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "Latency of completed incoming HTTP requests",
            ["status", "endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100),
            registry=r,
        )

    def map_sent(self, kind: str, count: int = 1) -> None:
        """`count` MapResponses written to clients: `kind` is full, delta, revoked or keepalive (the mapper's
        MessageKind)."""
        counters = self._map_counters.get(kind)
        if counters is None:
            # Looking a labelled child up costs more than counting; a storm counts ~100,000 messages.
            counters = self._map_counters[kind] = (
                self.map_messages.labels(kind),
                self.hs_map_sent.labels("ok", kind),
                *(() if kind == "keepalive" else (self.hs_map_generated.labels(kind),)),
            )
        for counter in counters:
            counter.inc(count)

    def bind_store(self, store: Store, streams: Callable[[], int]) -> None:
        self.nodes.set_function(lambda: len(store.nodes))
        self.hs_nodes.set_function(lambda: len(store.nodes))
        self.online.set_function(lambda: sum(1 for n in store.nodes if store.is_online(n)))
        self.map_streams.set_function(streams)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Time every plain HTTP request by its route (a raw path would explode the label set)."""
        started = time.perf_counter()
        status = 500
        aborted = ""
        proto = f"HTTP/{request.version.major}.{request.version.minor}"
        if request.headers.get("Upgrade", "").lower() == "websocket":
            proto += " WebSocket"
        inflight = self.http_inflight.labels("", proto)
        inflight.inc()
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            aborted = "true"
            raise
        finally:
            inflight.dec()
            route = request.match_info.route.resource
            path = route.canonical if route is not None else "unmatched"
            endpoint = f"{request.method} {path}" if route is not None else "<no-match>"
            elapsed = time.perf_counter() - started
            self.http_requests.labels("", str(status), endpoint, proto, aborted).inc()
            if status != 101:  # upgraded connections live for hours: their duration is no request latency
                self.request_seconds.labels(path, str(status)).observe(elapsed)
                if not aborted:
                    self.http_duration.labels(str(status), endpoint).observe(elapsed)

    async def handle(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
