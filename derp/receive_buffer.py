"""Bytes a transport delivered that nobody has read yet, kept as the chunks they arrived in.

``asyncio.StreamReader`` appends every chunk to one bytearray and copies each read back out of it (and moves
what is left to the front), so a relay that reads all that has arrived copies every byte three times before
parsing it.  A :class:`ReceiveBuffer` holds the transport's own ``bytes`` objects: ``read_some`` hands back
the oldest chunk itself whenever the caller's limit allows, so the relay's hot path copies nothing here.
Reading is still bounded: past ``limit`` unread bytes the transport stops reading (TCP pushes back on the
peer) until the reader has caught up.
"""

from __future__ import annotations

import asyncio
import collections


class ReceiveBuffer:
    """Received chunks in order, read by one coroutine at a time."""

    __slots__ = (
        "_chunks",
        "_eof",
        "_exception",
        "_limit",
        "_offset",
        "_paused",
        "_size",
        "_transport",
        "_waiter",
    )

    def __init__(self, limit: int) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._offset = 0
        """Bytes of the oldest chunk already read."""
        self._size = 0
        """Unread bytes in all chunks."""
        self._limit = limit
        self._transport: asyncio.Transport | None = None
        self._paused = False
        self._eof = False
        self._exception: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read."""
        return self._size

    def set_transport(self, transport: asyncio.Transport) -> None:
        """The transport to pause while more than ``limit`` bytes wait unread."""
        self._transport = transport

    def feed_data(self, data: bytes) -> None:
        """Keep a chunk the transport delivered; bytes after the end of the stream are ignored."""
        if not data or self._eof:
            return
        self._chunks.append(data)
        self._size += len(data)
        self._wake()
        if not self._paused and self._size > self._limit and self._transport is not None:
            try:
                self._transport.pause_reading()
            except NotImplementedError:  # a transport that cannot pause: the limit is then advisory
                return
            self._paused = True

    def feed_eof(self) -> None:
        """The stream ended: reads return what is left, then b"" (``read_exactly``: IncompleteReadError)."""
        self._eof = True
        self._wake()

    def set_exception(self, exc: BaseException) -> None:
        """The connection failed: every read from now on raises ``exc``."""
        self._exception = exc
        self._wake()

    async def read_some(self, limit: int) -> bytes:
        """Up to ``limit`` bytes, as soon as any are here; b"" at the end of the stream.

        The oldest chunk is returned whole, without a copy, when it fits in ``limit``.
        """
        while not self._size:
            self._raise_if_failed()
            if self._eof:
                return b""
            await self._wait()
        self._raise_if_failed()
        chunk = self._chunks[0]
        if not self._offset and len(chunk) <= limit:
            self._chunks.popleft()
            self._consumed(len(chunk))
            return chunk
        return self._take(min(limit, len(chunk) - self._offset))

    async def read_exactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; IncompleteReadError (with what there was) if the stream ends first."""
        while self._size < n:
            self._raise_if_failed()
            if self._eof:
                raise asyncio.IncompleteReadError(self._take(self._size), n)
            await self._wait()
        self._raise_if_failed()
        return self._take(n)

    async def read_until(self, separator: bytes, limit: int) -> bytes:
        """Everything up to and including ``separator``; ValueError if it is not within ``limit`` bytes."""
        while True:
            self._raise_if_failed()
            joined = self._join()
            end = joined.find(separator)
            if end >= 0:
                return self._take(end + len(separator))
            if len(joined) > limit:
                raise ValueError(f"no {separator!r} within {limit} bytes")
            if self._eof:
                raise asyncio.IncompleteReadError(self._take(self._size), None)
            await self._wait()

    def _raise_if_failed(self) -> None:
        if self._exception is not None:
            raise self._exception

    def _join(self) -> bytes:
        """All unread bytes as one chunk (for the rare reads that must look across chunks)."""
        if len(self._chunks) > 1 or self._offset:
            joined = b"".join([self._chunks[0][self._offset :], *list(self._chunks)[1:]])
            self._chunks.clear()
            self._chunks.append(joined)
            self._offset = 0
        return self._chunks[0] if self._chunks else b""

    def _take(self, n: int) -> bytes:
        """Remove and return the next ``n`` unread bytes (``n`` at most ``buffered``)."""
        parts = []
        needed = n
        while needed:
            chunk = self._chunks[0]
            start = self._offset
            available = len(chunk) - start
            if available > needed:
                parts.append(chunk[start : start + needed])
                self._offset = start + needed
                break
            parts.append(chunk[start:] if start else chunk)
            self._chunks.popleft()
            self._offset = 0
            needed -= available
        self._consumed(n)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _consumed(self, n: int) -> None:
        self._size -= n
        if self._paused and self._size <= self._limit and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self) -> None:
        if self._waiter is not None:
            raise RuntimeError("ReceiveBuffer is read by one coroutine at a time")
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            if self._waiter is waiter:
                self._waiter = None
