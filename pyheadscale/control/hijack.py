"""Taking over an aiohttp connection after an HTTP/1.1 `101 Switching Protocols`.

TS2021 and DERP both upgrade a plain HTTP request into a byte stream of their own. aiohttp has no public hijack, so
this does what its WebSocketResponse does: answer 101, stop HTTP keep-alive, and install a payload parser that
receives every later byte from the socket. The parser feeds an asyncio.StreamReader bound to the transport, which
pauses reading when the buffer fills, so a slow consumer applies back-pressure instead of growing memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiohttp import web

READ_LIMIT = 256 * 1024


class _ReaderFeed:
    """The payload-parser interface aiohttp's protocol calls with raw bytes after the upgrade."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._reader.feed_data(data)
        return False, b""

    def feed_eof(self) -> None:
        self._reader.feed_eof()


class HijackedConnection:
    """The raw byte stream of a connection whose HTTP request was answered with 101.

    The handler must return `response` (already sent) to aiohttp when it is done with the stream.
    """

    def __init__(self, request: web.BaseRequest, response: web.StreamResponse, reader: asyncio.StreamReader) -> None:
        self.response = response
        self._protocol = request.protocol
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("connection lost before the upgrade")
        self._transport = transport
        self.reader = reader
        self.peer = transport.get_extra_info("peername")

    def write_nowait(self, data: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(data)

    async def write(self, data: bytes) -> None:
        """Write and wait while the socket's send buffer is above its high-water mark."""
        if self._transport.is_closing():
            raise ConnectionResetError("connection closed")
        self._transport.write(data)
        # aiohttp's protocol implements asyncio flow control; its drain helper is what its own writers await.
        await self._protocol._drain_helper()

    @property
    def closed(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._transport.close()


async def take_over(request: web.Request, headers: Mapping[str, str]) -> HijackedConnection:
    """Answer `request` with 101 and the given headers, and return the connection's raw stream."""
    response = web.StreamResponse(status=101, headers=headers)
    response.force_close()
    await response.prepare(request)
    reader = asyncio.StreamReader(limit=READ_LIMIT)
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("connection lost during the upgrade")
    reader.set_transport(transport)
    request.protocol.set_parser(_ReaderFeed(reader))  # type: ignore[arg-type]
    request.protocol.keep_alive(False)
    return HijackedConnection(request, response, reader)
