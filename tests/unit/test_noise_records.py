"""Noise transport records without I/O (pyheadscale/control/noise.py `RecordDecoder`): any chunking of the
same bytes gives the same plaintexts, garbage gives a NoiseError naming the fault, buffering stays under one
record; and a failed write breaks the send side of a NoiseStream (noise_stream.py)."""

from __future__ import annotations

import asyncio
import os
import random
import re
import struct

import pytest

from pyheadscale.control import noise
from pyheadscale.control.noise_stream import NoiseStream
from pyheadscale.control.ws_bytes import WebSocketBytes

KEY = os.urandom(32)
PLAINTEXTS = [b"first", b"", b"x" * noise.MAX_PLAINTEXT_SIZE, b"y", b"z" * 9000, b"", b"last"]


def sealed(plaintexts: list[bytes]) -> bytes:
    sender = noise.TransportCipher(KEY)
    return b"".join(sender.seal_records(p) for p in plaintexts)


def decode(data: bytes, cuts: list[int]) -> list[bytes]:
    """Feed `data` cut at `cuts` to a fresh decoder; checks the buffer bound after every feed."""
    decoder = noise.RecordDecoder(noise.TransportCipher(KEY))
    out: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        out += decoder.feed(data[start:end])
        assert decoder.pending < noise.MAX_MESSAGE_SIZE
    decoder.end()
    assert decoder.pending == 0
    return out


def records_of(plaintexts: list[bytes]) -> list[bytes]:
    """What the decoder returns for `plaintexts`: one plaintext a record, long ones split at 4077 bytes."""
    out = []
    for p in plaintexts:
        out += [p[i : i + noise.MAX_PLAINTEXT_SIZE] for i in range(0, len(p), noise.MAX_PLAINTEXT_SIZE)] or [
            b""
        ]
    return out


def test_whole_byte_by_byte_and_random_chunkings_give_the_same_records() -> None:
    data = sealed(PLAINTEXTS)
    expected = records_of(PLAINTEXTS)
    assert decode(data, []) == expected
    assert decode(data, list(range(1, len(data)))) == expected
    rng = random.Random(11)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 40)))
        assert decode(data, cuts) == expected, cuts
    # cuts on every record boundary and one byte either side of it
    boundaries, at = [], 0
    while at < len(data):
        at += noise.HEADER_LEN + struct.unpack(">H", data[at + 1 : at + 3])[0]
        boundaries.append(at)
    near = sorted({c + d for c in boundaries for d in (-1, 0, 1)} & set(range(1, len(data))))
    assert decode(data, near) == expected


def test_empty_feeds_change_nothing() -> None:
    decoder = noise.RecordDecoder(noise.TransportCipher(KEY))
    data = sealed([b"abc"])
    assert decoder.feed(b"") == []
    assert decoder.feed(data[:2]) == [] and decoder.feed(b"") == []
    assert decoder.feed(data[2:]) == [b"abc"]


def _tampered() -> bytes:
    data = bytearray(sealed([b"hello", b"world"]))
    data[-1] ^= 1
    return bytes(data)


@pytest.mark.parametrize(
    "data, message",
    [
        (struct.pack(">BH", noise.MSG_RESPONSE, 48) + bytes(48), "unexpected frame type 2 after handshake"),
        (struct.pack(">BH", noise.MSG_ERROR, 5) + b"hello", "unexpected frame type 3 after handshake"),
        (b"GET / HTTP/1.1\r\n", "unexpected frame type 71 after handshake"),
        (struct.pack(">BH", noise.MSG_RECORD, 0xFFFF), "record of 65535 bytes exceeds the 4093-byte limit"),
        (struct.pack(">BH", noise.MSG_RECORD, 4094), "record of 4094 bytes exceeds the 4093-byte limit"),
        (struct.pack(">BH", noise.MSG_RECORD, 15) + bytes(15), "record shorter than its authentication tag"),
        (struct.pack(">BH", noise.MSG_RECORD, 16) + bytes(16), "record failed authentication"),
        (_tampered(), "record failed authentication"),
        (sealed([b"ok"]) + b"\x00\x00\x10", "unexpected frame type 0 after handshake"),
    ],
)
@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_garbage_is_refused_by_name_in_any_chunking(data: bytes, message: str, byte_by_byte: bool) -> None:
    decoder = noise.RecordDecoder(noise.TransportCipher(KEY))
    pieces = [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]
    with pytest.raises(noise.NoiseError, match=message) as raised:
        for piece in pieces:
            decoder.feed(piece)
    # a refused stream stays refused, with the same words
    with pytest.raises(noise.NoiseError, match=re.escape(str(raised.value))):
        decoder.feed(sealed([b"more"]))
    with pytest.raises(noise.NoiseError, match=re.escape(str(raised.value))):
        decoder.end()


def test_oversized_header_is_refused_before_its_body_arrives() -> None:
    decoder = noise.RecordDecoder(noise.TransportCipher(KEY))
    with pytest.raises(noise.NoiseError, match="exceeds"):
        decoder.feed(struct.pack(">BH", noise.MSG_RECORD, 5000))
    assert decoder.pending == 0


def test_buffer_holds_at_most_one_incomplete_record() -> None:
    decoder = noise.RecordDecoder(noise.TransportCipher(KEY))
    largest = sealed([b"q" * noise.MAX_PLAINTEXT_SIZE])
    assert len(largest) == noise.MAX_MESSAGE_SIZE
    assert decoder.feed(largest[:-1]) == []
    assert decoder.pending == noise.MAX_MESSAGE_SIZE - 1
    assert decoder.feed(largest[-1:]) == [b"q" * noise.MAX_PLAINTEXT_SIZE]
    assert decoder.pending == 0


@pytest.mark.parametrize(
    "cut, part", [(1, "record header"), (2, "record header"), (3, "record"), (20, "record")]
)
def test_stream_ending_inside_a_record_is_named(cut: int, part: str) -> None:
    decoder = noise.RecordDecoder(noise.TransportCipher(KEY))
    assert decoder.feed(sealed([b"payload-bytes"])[:cut]) == []
    with pytest.raises(noise.NoiseError, match=f"^truncated {part} at the end of the stream$"):
        decoder.end()


# ---- the send side: a write that did not complete breaks the cipher ----


async def _no_bytes() -> bytes:
    return b""


def _session() -> noise.Session:
    return noise.Session(
        version=130,
        peer_static=bytes(32),
        send=noise.TransportCipher(KEY),
        recv=noise.TransportCipher(os.urandom(32)),
        handshake_hash=bytes(32),
    )


async def test_failed_write_breaks_the_sender() -> None:
    delivered: list[bytes] = []
    fail = False

    async def write(data: bytes) -> None:
        if fail:
            raise ConnectionResetError("peer went away")
        delivered.append(data)

    stream = NoiseStream(_session(), _no_bytes, write)
    await stream.write(b"one")
    fail = True
    with pytest.raises(ConnectionResetError):
        await stream.write(b"two")
    fail = False
    # the peer never saw record 1, so record 2 would not open at its end: refuse instead of sending it
    with pytest.raises(
        noise.NoiseError, match=r"cipher broken: an earlier write failed \(ConnectionResetError\)"
    ):
        await stream.write(b"three")
    assert stream.session.send.broken
    assert noise.RecordDecoder(noise.TransportCipher(KEY)).feed(b"".join(delivered)) == [b"one"]


async def test_preamble_goes_out_with_the_first_write_only() -> None:
    """The bytes before the records (the handshake response and the early payload) share the first write."""
    delivered: list[bytes] = []

    async def write(data: bytes) -> None:
        delivered.append(data)

    stream = NoiseStream(_session(), _no_bytes, write, preamble=b"PRE")
    await stream.write(b"")  # nothing to send: the preamble waits for the first record
    await stream.write(b"one")
    await stream.write(b"two")
    assert len(delivered) == 2 and delivered[0].startswith(b"PRE") and not delivered[1].startswith(b"PRE")
    records = noise.RecordDecoder(noise.TransportCipher(KEY)).feed(delivered[0][3:] + delivered[1])
    assert records == [b"one", b"two"]


async def test_cancelled_write_does_not_break_the_sender() -> None:
    """A writer cancelled while the transport drains (a reset map stream's handler) has handed its bytes over
    already (the `Write` contract): the session goes on, and the peer opens every record."""
    delivered: list[bytes] = []
    draining = asyncio.Event()

    async def write(data: bytes) -> None:
        delivered.append(data)
        if len(delivered) == 1:
            draining.set()
            await asyncio.Event().wait()

    stream = NoiseStream(_session(), _no_bytes, write)
    task = asyncio.create_task(stream.write(b"slow"))
    await draining.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await stream.write(b"next")
    assert not stream.session.send.broken
    assert noise.RecordDecoder(noise.TransportCipher(KEY)).feed(b"".join(delivered)) == [b"slow", b"next"]


async def test_cancelled_before_its_turn_seals_nothing() -> None:
    """A writer cancelled while another holds the lock has not sealed: the nonces stay in step."""
    delivered: list[bytes] = []
    release = asyncio.Event()

    async def write(data: bytes) -> None:
        delivered.append(data)
        await release.wait()

    stream = NoiseStream(_session(), _no_bytes, write)
    first = asyncio.create_task(stream.write(b"first"))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(stream.write(b"never"))
    await asyncio.sleep(0)
    waiting.cancel()
    release.set()
    await first
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await stream.write(b"third")
    assert noise.RecordDecoder(noise.TransportCipher(KEY)).feed(b"".join(delivered)) == [b"first", b"third"]


async def test_stream_reads_records_from_any_chunking() -> None:
    """NoiseStream over a transport handing out odd pieces: the non-empty plaintexts in order, then b""."""
    data = sealed(PLAINTEXTS)
    rng = random.Random(3)
    cuts = sorted(rng.sample(range(1, len(data)), 30))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]

    async def read_some() -> bytes:
        return pieces.pop(0) if pieces else b""

    session = _session()
    session.recv = noise.TransportCipher(KEY)
    stream = NoiseStream(session, read_some, _no_exit)
    got = []
    while chunk := await stream.read():
        got.append(chunk)
    assert got == [r for r in records_of(PLAINTEXTS) if r]


async def _no_exit(_data: bytes) -> None:
    return None


async def test_websocket_bytes_read_some_skips_empty_messages() -> None:
    messages: list[bytes | None] = [b"ab", b"", b"c", None]

    async def receive() -> bytes | None:
        return messages.pop(0)

    async def send(_data: bytes) -> None:
        return None

    transport = WebSocketBytes(receive, send)
    assert await transport.read_exactly(1) == b"a"
    assert await transport.read_some() == b"b"
    assert await transport.read_some() == b"c"
    assert await transport.read_some() == b""
    assert await transport.read_some() == b""
