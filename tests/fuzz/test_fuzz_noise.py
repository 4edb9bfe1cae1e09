"""Noise frames (pyheadscale/control/noise.py, noise_stream.py): handshake initiations and responses, record
headers and whole record streams give a result or NoiseError, nothing else."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pyheadscale.control import noise
from pyheadscale.control.noise_stream import NoiseStream
from pyheadscale.tailkey import MachinePrivate
from tests.fuzz import bounds
from tests.fuzz.seeds import mutated_bytes

SERVER = MachinePrivate.generate()
VERSION = 130


def initiation() -> tuple[noise.Initiator, bytes]:
    initiator = noise.Initiator(MachinePrivate.generate(), SERVER.public(), VERSION)
    return initiator, initiator.initiation()


VALID_INITIATIONS = [initiation()[1] for _ in range(3)]


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@given(st.one_of(mutated_bytes(VALID_INITIATIONS), st.binary(max_size=200)))
@example(VALID_INITIATIONS[0])
def test_initiation(init: bytes) -> None:
    bounds.call("noise.initiation", noise.respond, SERVER, init, allowed=(noise.NoiseError,))


@given(st.binary(max_size=120))
@example(struct.pack(">BH", noise.MSG_ERROR, 5) + b"\xff\xfe\x00ab")
def test_response(response: bytes) -> None:
    initiator, _ = initiation()
    bounds.call("noise.response", initiator.finish, response, allowed=(noise.NoiseError,))


@given(st.binary(min_size=3, max_size=3))
def test_record_header(header: bytes) -> None:
    length = bounds.call(
        "noise.record_header", noise.parse_record_header, header, allowed=(noise.NoiseError,)
    )
    assert length is None or noise.TAG_SIZE <= length <= noise.MAX_CIPHERTEXT_SIZE


@st.composite
def record_streams(draw: st.DrawFn) -> tuple[noise.Session, bytes]:
    """A server session and the bytes its client sent: real records, some damaged, and junk."""
    initiator, init = initiation()
    response, server_session = noise.respond(SERVER, init)
    client = initiator.finish(response)
    records = [
        client.send.seal_records(draw(st.binary(max_size=noise.MAX_PLAINTEXT_SIZE * 2)))
        for _ in range(draw(st.integers(0, 4)))
    ]
    raw = b"".join(records) or b"\x04\x00\x10" + bytes(16)
    stream = draw(st.one_of(st.just(raw), mutated_bytes([raw]), st.binary(max_size=300)))
    return server_session, stream


async def read_all(session: noise.Session, data: bytes) -> int:
    pieces = [data]

    async def read_some() -> bytes:
        return pieces.pop() if pieces else b""

    async def discard(_: bytes) -> None:
        return None

    stream = NoiseStream(session, read_some, discard)
    total = 0
    while chunk := await stream.read():
        assert len(chunk) <= noise.MAX_PLAINTEXT_SIZE
        total += len(chunk)
    return total


@given(record_streams())
def test_record_stream(loop: asyncio.AbstractEventLoop, case: tuple[noise.Session, bytes]) -> None:
    session, data = case
    bounds.run(loop, "noise.records", lambda: read_all(session, data), allowed=(noise.NoiseError,))


KEY = bytes(range(32))
SEALED = noise.TransportCipher(KEY)
RECORDS = b"".join(SEALED.seal_records(p) for p in (b"one", b"", b"x" * 5000, b"two"))


def decode_in_pieces(data: bytes, cuts: list[int]) -> tuple[list[bytes], str | None]:
    """What a fresh decoder gives for `data` cut at `cuts`: the plaintexts, and the error that ended it (the
    end of input included)."""
    decoder = noise.RecordDecoder(noise.TransportCipher(KEY))
    plaintexts: list[bytes] = []
    try:
        for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
            plaintexts += decoder.feed(data[start:end])
            assert decoder.pending < noise.MAX_MESSAGE_SIZE
        decoder.end()
    except noise.NoiseError as exc:
        return plaintexts, str(exc)
    return plaintexts, None


@given(
    st.one_of(st.just(RECORDS), mutated_bytes([RECORDS]), st.binary(max_size=200)),
    st.lists(st.integers(0, 1 << 16), max_size=20),
)
@example(RECORDS, [])
def test_record_decoder_chunking(data: bytes, raw_cuts: list[int]) -> None:
    """Any chunking ends as byte-by-byte feeding does: the same error, and the same plaintexts (a prefix of
    them when an error ends it: a feed that fails drops what it completed)."""
    cuts = sorted({c % len(data) for c in raw_cuts if data} - {0})
    one_by_one = bounds.call("noise.record_decoder", decode_in_pieces, data, list(range(1, len(data))))
    chunked = bounds.call("noise.record_decoder", decode_in_pieces, data, cuts)
    assert one_by_one is not None and chunked is not None
    assert chunked[1] == one_by_one[1]
    if one_by_one[1] is None:
        assert chunked[0] == one_by_one[0]
    else:
        assert chunked[0] == one_by_one[0][: len(chunked[0])]
