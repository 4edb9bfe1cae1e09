"""The TS2021 control endpoint: `GET /key`, the `/ts2021` upgrade and the requests inside the Noise channel.

After the 101, the server writes the Noise response frame and then, inside the Noise stream and before any
HTTP/2 bytes, the early payload: `\\xff\\xff\\xffTS`, a 4-byte big-endian length and JSON
`{"nodeKeyChallenge": ...}`. The 101, the two and the server's HTTP/2 SETTINGS go out in one write.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import struct
from collections.abc import Awaitable, Callable

from aiohttp import WSCloseCode, WSMsgType, web

from derp.conn import HijackedHTTPConn
from pyheadscale.config_limits import LimitsConfig
from pyheadscale.control import noise
from pyheadscale.control.h2server import BodyBudget, H2Limits, H2Server, InnerRequest
from pyheadscale.control.noise_stream import NoiseStream
from pyheadscale.control.recorder import record, recorder_dir
from pyheadscale.control.ws_bytes import WebSocketBytes
from pyheadscale.ratelimit import RateLimiter, retry_after_header, source_of
from pyheadscale.tailkey import ChallengePrivate, ChallengePublic, MachinePrivate, MachinePublic

log = logging.getLogger(__name__)

UPGRADE_PROTOCOL = "tailscale-control-protocol"
HANDSHAKE_HEADER = "X-Tailscale-Handshake"
EARLY_PAYLOAD_MAGIC = b"\xff\xff\xffTS"
# How long a client may take, after the upgrade, to start speaking HTTP/2.
HANDSHAKE_TIMEOUT = 30.0
# A WebSocket message holds a few Noise records; nothing legitimate comes near this.
WS_MAX_MESSAGE = 1 << 20

InnerHandler = Callable[[InnerRequest, MachinePublic], Awaitable[None]]
"""Serves one inner request for the machine whose Noise static key opened the session."""


def early_payload(challenge_public: ChallengePublic) -> bytes:
    body = json.dumps({"nodeKeyChallenge": challenge_public.text}).encode()
    return EARLY_PAYLOAD_MAGIC + struct.pack(">I", len(body)) + body


class _SwitchingProtocols(web.StreamResponse):
    """The 101 answering the upgrade. aiohttp holds its status line and headers until the first bytes after
    them (as it does for a `web.Response`), so they leave in the same write as the handshake response."""

    _send_headers_immediately = False


class ControlServer:
    """Serves TS2021 with the server's Noise key; `routes` maps inner paths to handlers."""

    def __init__(
        self,
        server_key: MachinePrivate,
        routes: dict[tuple[str, str], InnerHandler],
        prefix_routes: dict[str, InnerHandler] | None = None,
        limits: LimitsConfig | None = None,
        *,
        on_rate_limited: Callable[[], None] | None = None,
    ) -> None:
        """`prefix_routes` serve every path under a prefix (paths with ids in them), any method."""
        self.responder = noise.Responder(server_key)
        self.public_text = server_key.public().text
        self.routes = routes
        self.prefix_routes = prefix_routes or {}
        self.connections: set[asyncio.Task[None]] = set()
        limits = limits or LimitsConfig()
        rate = limits.rate.handshakes
        # A handshake costs us a Diffie-Hellman or three before we know who is asking.
        self.handshakes = RateLimiter(rate.per_second, rate.burst, on_limited=on_rate_limited)
        self.body_budget = BodyBudget(limits.http2.total_buffer_bytes)
        self._limits = limits

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/key", self.handle_key)
        app.router.add_route("*", "/ts2021", self.handle_upgrade)

    async def handle_key(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"legacyPublicKey": MachinePublic.zero().text, "publicKey": self.public_text}
        )

    async def handle_upgrade(self, request: web.Request) -> web.StreamResponse:
        upgrade = request.headers.get("Upgrade", "").lower()
        if not upgrade:
            return web.Response(status=400, text="missing Upgrade header (is a proxy stripping it?)\n")
        if upgrade == "websocket":
            return await self.handle_websocket(request)
        if upgrade != UPGRADE_PROTOCOL:
            return web.Response(status=400, text=f"unsupported upgrade protocol {upgrade!r}\n")
        encoded = request.headers.get(HANDSHAKE_HEADER, "")
        if not encoded:
            return web.Response(status=400, text=f"missing {HANDSHAKE_HEADER} header\n")
        refused = self._rate_limited(request)
        if refused is not None:
            return refused
        handshake = self._handshake(request, encoded, f"invalid {HANDSHAKE_HEADER}")
        if isinstance(handshake, web.Response):
            return handshake
        response_frame, session = handshake

        response = _SwitchingProtocols(
            status=101, headers={"Upgrade": UPGRADE_PROTOCOL, "Connection": "upgrade"}
        )
        response.force_close()
        try:
            await response.prepare(request)
            conn = HijackedHTTPConn(request, response)
        except ConnectionError as exc:
            log.info("TS2021 client %s left during the upgrade: %s", request.remote, exc)
            return response
        # The 101, the handshake response and the early payload go out with the server's HTTP/2 preface, in
        # one write, before any other HTTP/2 byte.
        challenge = ChallengePrivate.generate()
        preamble = response_frame + session.send.seal_records(early_payload(challenge.public()))
        stream = NoiseStream(session, conn.read_some, conn.write, preamble=preamble, direct=conn)
        try:
            await self.serve_session(stream, request.remote or "")
        finally:
            conn.close()
        return response

    async def handle_websocket(self, request: web.Request) -> web.StreamResponse:
        """The WebSocket form (browser and WASM clients): subprotocol `tailscale-control-protocol`, the
        initiation base64 in the `X-Tailscale-Handshake` query parameter, then the Noise stream in binary
        messages. Tailscale's server sends no early payload on this path, so neither do we."""
        refused = self._rate_limited(request)
        if refused is not None:
            return refused
        ws = web.WebSocketResponse(protocols=(UPGRADE_PROTOCOL,), compress=False, max_msg_size=WS_MAX_MESSAGE)
        ready = ws.can_prepare(request)
        if not ready.ok or ready.protocol != UPGRADE_PROTOCOL:
            return web.Response(status=400, text=f"websocket must offer the {UPGRADE_PROTOCOL} subprotocol\n")
        encoded = request.query.get(HANDSHAKE_HEADER, "")
        handshake = self._handshake(request, encoded, f"invalid or missing {HANDSHAKE_HEADER} parameter")
        if isinstance(handshake, web.Response):
            return handshake
        response_frame, session = handshake
        await ws.prepare(request)

        async def receive() -> bytes | None:
            message = await ws.receive()
            if message.type is WSMsgType.BINARY:
                return bytes(message.data)
            if message.type is WSMsgType.TEXT:
                await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"binary messages only")
            return None

        transport = WebSocketBytes(receive, ws.send_bytes)
        try:
            await transport.write(response_frame)
            await self.serve_session(
                NoiseStream(session, transport.read_some, transport.write), request.remote or ""
            )
        except ConnectionError as exc:
            log.info("TS2021 websocket from %s ended: %s", request.remote, exc)
        finally:
            await ws.close()
        return ws

    async def serve_session(self, stream: NoiseStream, remote: str) -> None:
        """Serve HTTP/2 inside an established Noise session until it ends."""
        session = stream.session
        machine_key = MachinePublic(session.peer_static)
        log.debug("TS2021 session from %s machine %s v%d", remote, machine_key.short(), session.version)

        record_dir = recorder_dir()

        async def dispatch(inner: InnerRequest) -> None:
            handler = self.routes.get((inner.method, inner.path))
            if handler is None:
                prefixed = (h for prefix, h in self.prefix_routes.items() if inner.path.startswith(prefix))
                handler = next(prefixed, None) or self._fallback(inner)
            if record_dir is not None:
                entry = {
                    "method": inner.method,
                    "path": inner.path,
                    "query": inner.query,
                    "headers": inner.headers,
                    "body": inner.body.decode(errors="replace"),
                    "capver": session.version,
                }
                await asyncio.to_thread(record, record_dir, machine_key, entry)
            await handler(inner, machine_key)

        task = asyncio.current_task()
        if task is not None:
            self.connections.add(task)
        try:
            connections = self._limits.connections
            h2_limits = H2Limits(
                budget=self.body_budget,
                connection_buffer=self._limits.http2.connection_buffer_bytes,
                request_timeout=connections.request_timeout.total_seconds(),
                idle_timeout=connections.idle_timeout.total_seconds(),
                preface_timeout=HANDSHAKE_TIMEOUT,
                parse_context={"hostinfo_max_bytes": self._limits.hostinfo.max_bytes},
            )
            await H2Server(stream, dispatch, h2_limits, source=remote).serve()
        finally:
            if task is not None:
                self.connections.discard(task)

    def _handshake(
        self, request: web.Request, encoded: str, invalid: str
    ) -> tuple[bytes, noise.Session] | web.Response:
        """Answer the base64 initiation `encoded`: (response frame, session), or the 400 that refuses it
        (`invalid` and what is wrong with it, or a failed handshake, whose cause only the log names)."""
        try:
            init = base64.b64decode(encoded, validate=True)
            noise.parse_initiation(init)
        except (binascii.Error, ValueError, noise.NoiseError) as exc:
            return web.Response(status=400, text=f"{invalid}: {exc}\n")
        try:
            return self.responder.respond(init)
        except noise.NoiseError as exc:
            log.info("refused TS2021 handshake from %s: %s", request.remote, exc)
            return web.Response(status=400, text="noise handshake failed\n")

    def _rate_limited(self, request: web.Request) -> web.Response | None:
        """A 429 for a source past its handshake budget (checked before any Diffie-Hellman)."""
        wait = self.handshakes.retry_after(source_of(request.remote))
        if not wait:
            return None
        return web.Response(
            status=429,
            text="too many handshakes from your address; retry later\n",
            headers={"Retry-After": retry_after_header(wait)},
        )

    async def close(self) -> None:
        """End every TS2021 connection and wait for their handlers (and their state changes) to finish."""
        tasks = list(self.connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _fallback(self, inner: InnerRequest) -> InnerHandler:
        known_paths = {path for _, path in self.routes}

        async def not_found(req: InnerRequest, _machine_key: MachinePublic) -> None:
            if req.path in known_paths:
                await req.response.respond(405, f"method {req.method} not allowed\n".encode(), "text/plain")
            elif req.path.startswith("/machine/"):
                await req.response.respond(501, b"not implemented\n", "text/plain")
            else:
                await req.response.respond(404, b"not found\n", "text/plain")

        return not_found
