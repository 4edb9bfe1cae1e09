"""A byte stream carried in binary WebSocket messages, as Tailscale's wsconn carries TS2021 for browser and
WASM clients: message boundaries mean nothing, the bytes are read as one stream."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

#: Receives the next binary message, or None once the socket is closed (by either side, or on an error).
ReceiveMessage = Callable[[], Awaitable[bytes | None]]
SendMessage = Callable[[bytes], Awaitable[None]]


class WebSocketBytes:
    def __init__(self, receive: ReceiveMessage, send: SendMessage) -> None:
        self._receive = receive
        self._send = send
        self._buffer = bytearray()
        self._eof = False

    async def read_exactly(self, n: int) -> bytes:
        """Exactly `n` bytes; asyncio.IncompleteReadError when the socket ends first (as StreamReader)."""
        while len(self._buffer) < n and not self._eof:
            message = await self._receive()
            if message is None:
                self._eof = True
            else:
                self._buffer += message
        if len(self._buffer) < n:
            partial = bytes(self._buffer)
            self._buffer.clear()
            raise asyncio.IncompleteReadError(partial, n)
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def read_some(self) -> bytes:
        """What is buffered, else the next non-empty message; b"" once the socket is closed."""
        while not self._buffer and not self._eof:
            message = await self._receive()
            if message is None:
                self._eof = True
            else:
                self._buffer += message
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    async def write(self, data: bytes) -> None:
        await self._send(data)
