"""ReceiveBuffer: chunks handed back without copies, exact and delimited reads, backpressure, end, failure."""

from __future__ import annotations

import asyncio

import pytest

from derp.receive_buffer import ReceiveBuffer
from tests.derp.harness import within


class PausableTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


async def test_a_chunk_that_fits_is_handed_back_itself() -> None:
    buffer = ReceiveBuffer(1 << 20)
    chunk = bytes(range(256)) * 100
    buffer.feed_data(chunk)
    assert await buffer.read_some(len(chunk)) is chunk
    assert buffer.buffered == 0


async def test_reads_respect_the_limit_and_keep_the_order() -> None:
    buffer = ReceiveBuffer(1 << 20)
    buffer.feed_data(b"abcdef")
    buffer.feed_data(b"ghij")
    assert await buffer.read_some(4) == b"abcd"
    assert await buffer.read_some(100) == b"ef"  # the rest of the oldest chunk, not across chunks
    assert await buffer.read_exactly(3) == b"ghi"
    buffer.feed_data(b"klm")
    assert await buffer.read_exactly(3) == b"jkl"  # across chunks
    assert await buffer.read_some(10) == b"m"


async def test_read_waits_for_data_then_returns_it() -> None:
    buffer = ReceiveBuffer(1 << 20)
    pending = asyncio.ensure_future(buffer.read_exactly(5))
    await asyncio.sleep(0)
    assert not pending.done()
    buffer.feed_data(b"12")
    buffer.feed_data(b"345")
    assert await within(pending) == b"12345"


async def test_read_until_finds_the_separator_across_chunks_and_bounds_the_search() -> None:
    buffer = ReceiveBuffer(1 << 20)
    buffer.feed_data(b"HTTP/1.1 101 Switching\r\n")
    buffer.feed_data(b"Upgrade: DERP\r\n\r\nDERP")
    assert await buffer.read_until(b"\r\n\r\n", 100) == b"HTTP/1.1 101 Switching\r\nUpgrade: DERP\r\n\r\n"
    assert await buffer.read_some(100) == b"DERP"
    buffer.feed_data(b"x" * 200)
    with pytest.raises(ValueError, match="within 100 bytes"):
        await buffer.read_until(b"\r\n\r\n", 100)


async def test_end_of_stream_gives_what_is_left_then_nothing() -> None:
    buffer = ReceiveBuffer(1 << 20)
    buffer.feed_data(b"abc")
    buffer.feed_eof()
    buffer.feed_data(b"after the end")  # ignored
    with pytest.raises(asyncio.IncompleteReadError) as short:
        await buffer.read_exactly(5)
    assert short.value.partial == b"abc"
    assert await buffer.read_some(10) == b""


async def test_a_failed_connection_fails_every_read() -> None:
    buffer = ReceiveBuffer(1 << 20)
    pending = asyncio.ensure_future(buffer.read_some(10))
    await asyncio.sleep(0)
    buffer.set_exception(ConnectionResetError("reset by peer"))
    with pytest.raises(ConnectionResetError, match="reset by peer"):
        await within(pending)
    with pytest.raises(ConnectionResetError):
        await buffer.read_exactly(1)


async def test_reading_pauses_past_the_limit_and_resumes_once_read() -> None:
    transport = PausableTransport()
    buffer = ReceiveBuffer(100)
    buffer.set_transport(transport)
    buffer.feed_data(b"a" * 60)
    assert transport.reading
    buffer.feed_data(b"b" * 60)
    assert not transport.reading  # 120 unread bytes: the peer is pushed back on
    assert await buffer.read_some(1000) == b"a" * 60
    assert transport.reading


async def test_one_reader_at_a_time() -> None:
    buffer = ReceiveBuffer(100)
    first = asyncio.ensure_future(buffer.read_some(10))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one coroutine at a time"):
        await buffer.read_some(10)
    buffer.feed_data(b"x")
    assert await within(first) == b"x"
