"""An established Noise session over a byte stream: plaintext in, record frames out, and back.

The receive side is `noise.RecordDecoder` fed with whatever the transport hands over; the send side seals and
writes under one lock, and a write that fails breaks the send cipher (see `write`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from pyheadscale.control.noise import RecordDecoder, Session

#: The next bytes the transport received, however many; b"" once the stream has ended.
ReadSome = Callable[[], Awaitable[bytes]]
#: Hands all of the bytes to the transport before it first suspends (as StreamWriter.write + drain and
#: aiohttp's response and WebSocket writes do), so a caller cancelled while it waits for the transport to
#: drain loses nothing; raises when the bytes may not all go out.
Write = Callable[[bytes], Awaitable[None]]


class DirectWrite(Protocol):
    """A transport that can also take bytes synchronously (derp.conn.Conn's `has_room`/`write_nowait`)."""

    def has_room(self) -> bool: ...

    def write_nowait(self, data: bytes) -> None: ...


class NoiseStream:
    """Reads and writes plaintext through a Noise session.

    `read()` returns the plaintext of the next record, or b"" at a clean end of stream. Any protocol violation
    (bad frame type, oversized or truncated record, failed authentication) raises NoiseError.
    """

    def __init__(
        self,
        session: Session,
        read_some: ReadSome,
        write: Write,
        *,
        preamble: bytes = b"",
        direct: DirectWrite | None = None,
    ) -> None:
        """`preamble` goes out ahead of the first records, in the same write: the server's handshake response
        and early payload, corked with its HTTP/2 preface (one write and one segment rather than two).
        `direct` is the same transport written synchronously, for `write_nowait`."""
        self.session = session
        self._read_some = read_some
        self._write = write
        self._direct = direct
        self._preamble = preamble
        self._write_lock = asyncio.Lock()
        self._decoder = RecordDecoder(session.recv)
        self._plaintexts: deque[bytes] = deque()

    async def read(self) -> bytes:
        # Zero-byte records are allowed in TS2021 (controlbase reads past them): b"" only means end of stream.
        while not self._plaintexts:
            data = await self._read_some()
            if not data:
                self._decoder.end()
                return b""
            self._plaintexts.extend(p for p in self._decoder.feed(data) if p)
        return self._plaintexts.popleft()

    def writable_now(self) -> bool:
        """Whether `write_nowait` would go out at once: no write under way and room in the transport."""
        direct = self._direct
        if direct is None or self._preamble:
            return False
        return not self._write_lock.locked() and direct.has_room()

    def write_nowait(self, plaintext: bytes) -> None:
        """Seal `plaintext` and hand it to the transport without waiting; only after `writable_now` said yes
        (so no other write is between sealing and sending, and the records go out in nonce order)."""
        assert self._direct is not None and not self._write_lock.locked()
        if not plaintext:
            return
        records = self.session.send.seal_records(plaintext)
        try:
            self._direct.write_nowait(records)
        except Exception as exc:
            self.session.send.mark_broken(f"an earlier write failed ({type(exc).__name__})")
            raise

    async def write(self, plaintext: bytes) -> None:
        """Seal and write `plaintext`. A write that raised may have delivered none, part or all of the
        records, so the peer's receive nonce is behind ours or out of step: the send cipher is marked broken,
        and every later write raises NoiseError instead of sending records the peer cannot open. Cancellation
        is no failure: by the `Write` contract the bytes were all handed over before the first suspension."""
        if not plaintext:
            return
        # Sealing assigns nonces, so sealing and writing must happen in one order.
        async with self._write_lock:
            records = self.session.send.seal_records(plaintext)
            if self._preamble:
                records, self._preamble = self._preamble + records, b""
            try:
                await self._write(records)
            except Exception as exc:
                self.session.send.mark_broken(f"an earlier write failed ({type(exc).__name__})")
                raise
