"""A DERP client: dial a server, log in, then send and receive relayed packets.

Used by the mesh (one server watching another), by the tests and by the
benchmark.  It speaks both transports real clients use: the HTTP
``Upgrade: DERP`` takeover and WebSocket with the ``derp`` subprotocol.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Iterable

import aiohttp
from yarl import URL

from derp import frames
from derp.conn import Conn, StreamConn, StreamProtocol, WebSocketConn, read_frame
from derp.handshake import (
    ClientInfo,
    ServerInfo,
    decode_server_info,
    decode_server_key,
    encode_client_info,
)
from pyheadscale.tailkey import DerpMeshKey, NodePrivate, NodePublic

MAX_RESPONSE_HEADER = 16 << 10
"""Bound on the HTTP head answering our upgrade request."""
SSLOption = ssl_module.SSLContext | bool | None


class DerpConnectError(ConnectionError):
    """The server refused the upgrade or the login."""


def _format_upgrade_request(url: URL, ideal_node: str | None) -> bytes:
    host = url.host or ""
    if ":" in host:
        host = f"[{host}]"
    if not url.is_default_port():
        host = f"{host}:{url.port}"
    lines = [
        f"GET {url.raw_path_qs or '/derp'} HTTP/1.1",
        f"Host: {host}",
        "User-Agent: pyheadscale-derp",
        "Upgrade: DERP",
        "Connection: Upgrade",
    ]
    if ideal_node:
        lines.append(f"Ideal-Node: {ideal_node}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _dial_upgrade(url: URL, ssl: SSLOption, ideal_node: str | None) -> Conn:
    """Open TCP (or TLS), send ``Upgrade: DERP`` and wait for 101 Switching Protocols."""
    use_tls = url.scheme == "https"
    context: ssl_module.SSLContext | None = None
    if use_tls:
        if isinstance(ssl, ssl_module.SSLContext):
            context = ssl
        elif ssl is False:
            context = ssl_module.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl_module.CERT_NONE
        else:
            context = ssl_module.create_default_context()
    if not url.host or url.port is None:
        raise DerpConnectError(f"DERP URL {str(url)!r} names no host and port")
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        StreamProtocol, url.host, url.port, ssl=context, server_hostname=url.host if context else None
    )
    conn = StreamConn(transport, protocol)
    try:
        await conn.write(_format_upgrade_request(url, ideal_node))
        try:
            head = await conn.read_until(b"\r\n\r\n", MAX_RESPONSE_HEADER)
        except ValueError as exc:
            raise DerpConnectError("oversized HTTP response to the DERP upgrade") from exc
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or parts[1] != "101":
            raise DerpConnectError(f"DERP upgrade refused: {status_line!r}")
    except BaseException:
        conn.close()
        raise
    return conn


class DerpClient:
    """A logged-in DERP connection. Create it with :meth:`connect`."""

    def __init__(
        self,
        conn: Conn,
        private_key: NodePrivate,
        server_public_key: NodePublic,
        server_info: ServerInfo,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._conn = conn
        self._private_key = private_key
        self.public_key = private_key.public()
        self.server_public_key = server_public_key
        self.server_info = server_info
        self._session = session
        self._closed = False

    @classmethod
    async def connect(
        cls,
        url: str,
        private_key: NodePrivate | None = None,
        *,
        mesh_key: DerpMeshKey | str | None = None,
        ssl: SSLOption = None,
        websocket: bool = False,
        can_ack_pings: bool = True,
        is_prober: bool = False,
        app_name: str = "",
        ideal_node: str | None = None,
        login_timeout: float = 10.0,
    ) -> DerpClient:
        """Dial ``url`` (``http(s)://host:port/derp``), upgrade, and log in.

        ``ssl`` is an SSLContext, False to skip certificate checks, or None for
        the system defaults.  A mesh key (or its 64 hex digits) marks a trusted
        mesh peer.  Without ``private_key`` the client makes up a new node key.
        """
        key = private_key if private_key is not None else NodePrivate.generate()
        mesh = DerpMeshKey.from_text(mesh_key) if isinstance(mesh_key, str) else mesh_key
        info = ClientInfo(mesh_key=mesh, can_ack_pings=can_ack_pings, is_prober=is_prober, app_name=app_name)
        parsed = URL(url)
        session: aiohttp.ClientSession | None = None
        conn: Conn | None = None
        try:
            async with asyncio.timeout(login_timeout):
                if websocket:
                    session = aiohttp.ClientSession()
                    headers = {"Ideal-Node": ideal_node} if ideal_node else None
                    ws = await session.ws_connect(
                        parsed, protocols=("derp",), ssl=ssl if ssl is not None else True, headers=headers
                    )
                    if ws.protocol != "derp":
                        raise DerpConnectError("server did not accept the derp websocket subprotocol")
                    conn = WebSocketConn(ws)
                else:
                    conn = await _dial_upgrade(parsed, ssl, ideal_node)
                frame_type, payload = await read_frame(conn, 1 << 10)
                server_key = decode_server_key(frame_type, payload)
                await conn.write(encode_client_info(key, server_key, info))
                frame_type, payload = await read_frame(conn, frames.MAX_SERVER_INFO_LEN)
                server_info = decode_server_info(key, server_key, frame_type, payload)
        except BaseException:
            if conn is not None:
                conn.close()
            if session is not None:
                await session.close()
            raise
        return cls(conn, key, server_key, server_info, session)

    @property
    def conn(self) -> Conn:
        """The byte stream under the session, for callers that read it raw (the benchmark's receiver)."""
        return self._conn

    async def send(self, destination: bytes, data: bytes) -> None:
        await self._conn.write(frames.encode_send_packet(destination, data))

    async def send_many(self, destination: bytes, packets: Iterable[bytes]) -> None:
        """Send several packets in one socket write (used by the benchmark)."""
        await self._conn.write(b"".join(frames.encode_send_packet(destination, p) for p in packets))

    async def forward_packet(self, source: bytes, destination: bytes, data: bytes) -> None:
        """Mesh only: hand the server a packet another server received from ``source``."""
        await self._conn.write(frames.encode_forward_packet(source, destination, data))

    async def ping(self, data: bytes) -> None:
        await self._conn.write(frames.encode_ping(data))

    async def pong(self, data: bytes) -> None:
        await self._conn.write(frames.encode_pong(data))

    async def note_preferred(self, preferred: bool) -> None:
        await self._conn.write(frames.encode_note_preferred(preferred))

    async def watch_conns(self) -> None:
        """Mesh only: subscribe to PeerPresent/PeerGone for every client of the server."""
        await self._conn.write(frames.encode_watch_conns())

    async def close_peer(self, peer: bytes) -> None:
        """Mesh only: ask the server to disconnect ``peer``."""
        await self._conn.write(frames.encode_close_peer(peer))

    async def write_raw(self, data: bytes) -> None:
        """Write arbitrary bytes; for tests that must misbehave on purpose."""
        await self._conn.write(data)

    async def recv(self) -> frames.ServerMessage:
        """Wait for the next message, skipping frame types this client does not know."""
        while True:
            frame_type, payload = await read_frame(self._conn, frames.MAX_FRAME_SIZE)
            message = frames.decode_server_message(frame_type, payload)
            if message is not None:
                return message

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._conn.close()
        if isinstance(self._conn, WebSocketConn):
            await self._conn.wait_closed()
        if self._session is not None:
            await self._session.close()
