"""aiohttp routes for DERP: the ``/derp`` upgrade, latency probes and captive-portal checks."""

from __future__ import annotations

import logging
import re

from aiohttp import web

from derp.conn import HijackedHTTPConn, WebSocketConn
from derp.frames import PROTOCOL_VERSION
from derp.server import DerpServer

log = logging.getLogger(__name__)

CHALLENGE_HEADER = "X-Tailscale-Challenge"
RESPONSE_HEADER = "X-Tailscale-Response"
IDEAL_NODE_HEADER = "Ideal-Node"
_CHALLENGE_RE = re.compile(r"[A-Za-z0-9._:-]{0,64}")
"""Challenges echoed back are limited to a harmless alphabet and length."""

MAX_WEBSOCKET_MESSAGE = 1 << 20
"""A message may carry several DERP frames, but never needs more than this."""

_server_key = web.AppKey("derp_server", DerpServer)


def add_derp_routes(app: web.Application, server: DerpServer) -> None:
    """Mount ``/derp``, ``/derp/probe``, ``/derp/latency-check`` and ``/generate_204`` on ``app``.

    Also registers an ``on_shutdown`` hook that closes ``server``, because
    upgraded DERP connections would otherwise hold aiohttp's shutdown open.
    """
    app[_server_key] = server
    app.router.add_get("/derp", handle_derp, allow_head=False)
    app.router.add_route("*", "/derp/probe", handle_probe)
    app.router.add_route("*", "/derp/latency-check", handle_probe)
    app.router.add_get("/generate_204", handle_generate_204)
    app.on_shutdown.append(_close_server)


async def _close_server(app: web.Application) -> None:
    await app[_server_key].close()


async def handle_derp(request: web.Request) -> web.StreamResponse:
    server = request.app[_server_key]
    upgrade = request.headers.get("Upgrade", "").lower()
    # Early clients sent "Upgrade: WebSocket" but spoke raw DERP; real WebSocket
    # clients are told apart by asking for the "derp" subprotocol.
    if upgrade == "websocket" and "derp" in request.headers.get("Sec-WebSocket-Protocol", ""):
        return await _serve_websocket(request, server)
    if upgrade not in ("derp", "websocket"):
        return web.Response(status=426, text="DERP requires connection upgrade\n")
    if server.closed:
        return web.Response(status=503, text="DERP server is shutting down\n")
    response = web.StreamResponse(
        status=101,
        reason="Switching Protocols",
        headers={
            "Upgrade": "DERP",
            "Connection": "Upgrade",
            "Derp-Version": str(PROTOCOL_VERSION),
            "Derp-Public-Key": server.public_key.hex(),
        },
    )
    await response.prepare(request)
    conn = HijackedHTTPConn(request, response)
    try:
        await server.accept(conn, ideal_node=request.headers.get(IDEAL_NODE_HEADER))
    finally:
        conn.close()
        # The connection is no longer HTTP; never let aiohttp try to reuse it.
        response.force_close()
    return response


async def _serve_websocket(request: web.Request, server: DerpServer) -> web.StreamResponse:
    # No compression: WireGuard packets don't compress.
    ws = web.WebSocketResponse(protocols=("derp",), compress=False, max_msg_size=MAX_WEBSOCKET_MESSAGE)
    await ws.prepare(request)
    if ws.ws_protocol != "derp":
        await ws.close(message=b"client must speak the derp subprotocol")
        return ws
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    remote = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else None
    conn = WebSocketConn(ws, remote)
    try:
        await server.accept(conn, ideal_node=request.headers.get(IDEAL_NODE_HEADER))
    finally:
        await ws.close()
    return ws


async def handle_probe(request: web.Request) -> web.Response:
    """Latency probe for clients that cannot use UDP STUN (browsers, UDP-blocked networks)."""
    if request.method not in ("GET", "HEAD"):
        return web.Response(status=405, text="bogus probe method\n")
    return web.Response(status=200, headers={"Access-Control-Allow-Origin": "*"})


async def handle_generate_204(request: web.Request) -> web.Response:
    """Captive-portal check: 204, echoing a well-formed challenge as proof it reached us."""
    headers = {"Cache-Control": "no-cache, no-store, must-revalidate, no-transform, max-age=0"}
    challenge = request.headers.get(CHALLENGE_HEADER)
    if challenge and _CHALLENGE_RE.fullmatch(challenge):
        headers[RESPONSE_HEADER] = "response " + challenge
    return web.Response(status=204, headers=headers)
