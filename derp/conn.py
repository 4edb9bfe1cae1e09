"""Byte-stream connections that DERP frames travel over.

DERP runs over three kinds of stream: a plain (or TLS) TCP socket dialled by
our client, an HTTP connection taken over from aiohttp after ``Upgrade: DERP``,
and a WebSocket whose binary messages carry the DERP byte stream.  The server
and client only need the small :class:`Conn` interface, so each transport
lives behind it.
"""

from __future__ import annotations

import abc
import asyncio
from typing import Any, cast

from aiohttp import WSMsgType, web
from aiohttp.client_ws import ClientWebSocketResponse

from derp.frames import FRAME_HEADER_LEN, ProtocolError, decode_header
from derp.receive_buffer import ReceiveBuffer

READ_BUFFER_LIMIT = 256 << 10
"""Bytes buffered from a peer beyond which we stop reading its socket (TCP backpressure)."""

READ_CHUNK = READ_BUFFER_LIMIT
"""Most bytes one ``read_some`` returns: all that is buffered, so a busy reader awaits once per chunk."""

WRITE_HIGH_WATER = 64 << 10
"""Bytes waiting in a transport's send buffer above which ``has_room`` says no (as asyncio's own default)."""


class Conn(abc.ABC):
    """A bidirectional byte stream carrying DERP frames."""

    remote_addr: tuple[str, int] | None = None
    """The peer's IP and port, when the transport knows them."""

    @property
    def remote_ip(self) -> str:
        return self.remote_addr[0] if self.remote_addr else ""

    @abc.abstractmethod
    async def read_exactly(self, n: int) -> bytes:
        """Read exactly ``n`` bytes; raise ConnectionError (or IncompleteReadError) at EOF."""

    @abc.abstractmethod
    async def read_some(self, limit: int = READ_CHUNK) -> bytes:
        """Up to ``limit`` bytes, as soon as any arrive; b"" at the end of the stream."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Write ``data`` and wait until the transport can take more (backpressure)."""

    def has_room(self) -> bool:
        """Whether ``write_nowait`` would be taken now without growing the send buffer past its bound.

        Transports that cannot be written synchronously (WebSocket) always say no.
        """
        return False

    def write_nowait(self, data: bytes | bytearray | memoryview) -> None:
        """Hand ``data`` to the transport without waiting; only after ``has_room`` said yes."""
        raise NotImplementedError(f"{type(self).__name__} only writes asynchronously")

    def send_buffer_size(self) -> int:
        """Bytes written but not yet taken by the socket, where the transport says (else 0)."""
        return 0

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection; pending and future reads fail."""


def _address_pair(peername: object) -> tuple[str, int] | None:
    """Reduce a socket peername (2- or 4-tuple for IPv6) to (ip, port)."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        return str(peername[0]), int(peername[1])
    return None


async def read_frame(conn: Conn, max_payload: int) -> tuple[int, bytes]:
    """Read one frame, refusing (without reading it) a payload longer than ``max_payload``."""
    frame_type, length = decode_header(await conn.read_exactly(FRAME_HEADER_LEN))
    if length > max_payload:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {max_payload}")
    payload = await conn.read_exactly(length) if length else b""
    return frame_type, payload


class StreamProtocol(asyncio.Protocol):
    """What a TCP (or TLS) connection we dialled delivers to: a :class:`ReceiveBuffer`; write flow control."""

    def __init__(self) -> None:
        self.buffer = ReceiveBuffer(READ_BUFFER_LIMIT)
        self._writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.buffer.set_transport(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self.buffer.feed_data(data)

    def eof_received(self) -> bool:
        self.buffer.feed_eof()
        return False  # close the transport: a DERP peer that stops sending is gone

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if exc is None:
            self.buffer.feed_eof()
        else:
            self.buffer.set_exception(exc)
        self._wake_drain()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_drain()

    async def drain(self) -> None:
        """Return once the send buffer is under its high-water mark; ConnectionResetError once lost."""
        if self._lost:
            raise ConnectionResetError("connection lost")
        if not self._writing_paused:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._drain_waiter = waiter
        await waiter
        if self._lost:
            raise ConnectionResetError("connection lost")

    def _wake_drain(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class StreamConn(Conn):
    """A TCP (or TLS) connection we dialled, made with :class:`StreamProtocol`."""

    def __init__(self, transport: asyncio.Transport, protocol: StreamProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._buffer = protocol.buffer
        self.remote_addr = _address_pair(transport.get_extra_info("peername"))

    async def read_exactly(self, n: int) -> bytes:
        return await self._buffer.read_exactly(n)

    async def read_some(self, limit: int = READ_CHUNK) -> bytes:
        return await self._buffer.read_some(limit)

    async def read_until(self, separator: bytes, limit: int) -> bytes:
        """Up to and including ``separator`` (the end of an HTTP response head); ValueError past ``limit``."""
        return await self._buffer.read_until(separator, limit)

    async def write(self, data: bytes) -> None:
        if self._transport.is_closing():
            raise ConnectionResetError("connection closed")
        self._transport.write(data)
        await self._protocol.drain()

    def has_room(self) -> bool:
        transport = self._transport
        return not transport.is_closing() and transport.get_write_buffer_size() < WRITE_HIGH_WATER

    def write_nowait(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(data)

    def send_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def close(self) -> None:
        self._transport.close()


class _UpgradedStreamFeeder:
    """Receives the raw bytes aiohttp's protocol hands over once it stops parsing HTTP."""

    __slots__ = ("_buffer",)

    def __init__(self, buffer: ReceiveBuffer) -> None:
        self._buffer = buffer

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._buffer.feed_data(data)
        return False, b""

    def feed_eof(self) -> None:
        self._buffer.feed_eof()


class HijackedHTTPConn(Conn):
    """The TCP connection under an aiohttp request after we answered 101 Switching Protocols.

    aiohttp only switches protocols itself for WebSocket, so we install a
    payload parser on the request's protocol (the hook aiohttp's own WebSocket
    support uses) to receive the raw stream, and write through the prepared
    response, which applies aiohttp's write flow control.
    """

    def __init__(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("client went away before the upgrade")
        self._transport = transport
        self._response = response
        self._reader = ReceiveBuffer(READ_BUFFER_LIMIT)
        self._reader.set_transport(transport)
        protocol = cast(Any, request.protocol)
        protocol.set_parser(_UpgradedStreamFeeder(self._reader))
        self.remote_addr = _address_pair(transport.get_extra_info("peername"))

    async def read_exactly(self, n: int) -> bytes:
        return await self._reader.read_exactly(n)

    async def read_some(self, limit: int = READ_CHUNK) -> bytes:
        return await self._reader.read_some(limit)

    async def write(self, data: bytes) -> None:
        if self._transport.is_closing():
            raise ConnectionResetError("connection closed")
        await self._response.write(data)

    def has_room(self) -> bool:
        transport = self._transport
        return not transport.is_closing() and transport.get_write_buffer_size() < WRITE_HIGH_WATER

    def write_nowait(self, data: bytes | bytearray | memoryview) -> None:
        # Straight to the socket: the 101 response's headers went out when it was prepared, and a
        # hijacked stream has no body framing for aiohttp to add.
        self._transport.write(data)

    def send_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def close(self) -> None:
        self._transport.close()
        self._reader.feed_eof()


class WebSocketConn(Conn):
    """A WebSocket (server or client side) whose binary messages form the DERP byte stream."""

    def __init__(
        self,
        ws: web.WebSocketResponse | ClientWebSocketResponse,
        remote_addr: tuple[str, int] | None = None,
    ) -> None:
        self._ws = ws
        self._buffer = bytearray()
        self._closing_task: asyncio.Task[Any] | None = None
        self.remote_addr = remote_addr

    async def read_exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            message = await self._ws.receive()
            if message.type == WSMsgType.BINARY:
                self._buffer += message.data
            elif message.type == WSMsgType.TEXT:
                raise ProtocolError("DERP over WebSocket requires binary messages")
            else:
                raise asyncio.IncompleteReadError(bytes(self._buffer), n)
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def read_some(self, limit: int = READ_CHUNK) -> bytes:
        if not self._buffer:
            message = await self._ws.receive()
            if message.type == WSMsgType.BINARY:
                data: bytes = message.data
                if len(data) <= limit:
                    return data
                self._buffer += data
            elif message.type == WSMsgType.TEXT:
                raise ProtocolError("DERP over WebSocket requires binary messages")
            else:
                return b""
        data = bytes(self._buffer[:limit])
        del self._buffer[:limit]
        return data

    async def write(self, data: bytes) -> None:
        if self._ws.closed:
            raise ConnectionResetError("websocket closed")
        await self._ws.send_bytes(data)

    def close(self) -> None:
        if self._closing_task is None and not self._ws.closed:
            self._closing_task = asyncio.get_running_loop().create_task(self._ws.close())

    async def wait_closed(self) -> None:
        if self._closing_task is not None:
            await self._closing_task
