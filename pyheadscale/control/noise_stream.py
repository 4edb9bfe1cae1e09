"""An established Noise session over a byte stream: plaintext in, record frames out, and back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from pyheadscale.control.noise import HEADER_LEN, NoiseError, Session, parse_record_header

ReadExactly = Callable[[int], Awaitable[bytes]]
Write = Callable[[bytes], Awaitable[None]]


class NoiseStream:
    """Reads and writes plaintext through a Noise session.

    `read()` returns the plaintext of the next record, or b"" at a clean end of stream. Any protocol violation
    (bad frame type, oversized or truncated record, failed authentication) raises NoiseError.
    """

    def __init__(self, session: Session, read_exactly: ReadExactly, write: Write) -> None:
        self.session = session
        self._read_exactly = read_exactly
        self._write = write
        self._write_lock = asyncio.Lock()

    @property
    def version(self) -> int:
        return self.session.version

    @property
    def peer_static(self) -> bytes:
        return self.session.peer_static

    async def read(self) -> bytes:
        # Zero-byte records are allowed in TS2021 (controlbase reads past them): b"" only means end of stream.
        while True:
            try:
                header = await self._read_exactly(HEADER_LEN)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    raise NoiseError("truncated record header") from exc
                return b""
            length = parse_record_header(header)
            try:
                ciphertext = await self._read_exactly(length)
            except asyncio.IncompleteReadError as exc:
                raise NoiseError("truncated record") from exc
            plaintext = self.session.recv.open(ciphertext)
            if plaintext:
                return plaintext

    async def write(self, plaintext: bytes) -> None:
        if not plaintext:
            return
        # Sealing assigns nonces, so sealing and writing must happen in one order.
        async with self._write_lock:
            await self._write(self.session.send.seal_records(plaintext))
