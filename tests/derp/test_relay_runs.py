"""The relay's hot path: runs of SendPacket frames written straight to a destination that can take them.

Each client here is an in-memory connection the test feeds chunk by chunk, so it decides exactly what one read
holds and whether the destination's socket has room; what the server writes is parsed back into frames.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from derp import frames
from derp.client_conn import BatchBuffer
from derp.conn import Conn
from derp.frames import FrameType
from derp.handshake import ClientInfo, encode_client_info
from derp.server import DerpServer
from pyheadscale.tailkey import NodePrivate
from tests.derp.harness import eventually, within


class MemoryConn(Conn):
    """A client connection: reads are the chunks the test feeds; writes are kept, whole, in order."""

    def __init__(self) -> None:
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.written = bytearray()
        self.room = True
        """What ``has_room`` answers."""
        self.drained = asyncio.Event()
        """Set while ``write`` returns at once; clear, it waits (the bytes are written first, as a transport
        takes them before its drain waits)."""
        self.drained.set()
        self.closed = False
        self.remote_addr = ("192.0.2.1", 40000)
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        self._chunks.put_nowait(chunk)

    async def read_exactly(self, n: int) -> bytes:
        while len(self._pending) < n:
            self._pending += await self._next()
        data, self._pending = self._pending[:n], self._pending[n:]
        return data

    async def read_some(self, limit: int = 1 << 18) -> bytes:
        if not self._pending:
            self._pending = await self._next()
        data, self._pending = self._pending[:limit], self._pending[limit:]
        return data

    async def _next(self) -> bytes:
        chunk = await self._chunks.get()
        if not chunk:
            raise ConnectionResetError("closed")
        return chunk

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("closed")
        self.written += data
        await self.drained.wait()

    def has_room(self) -> bool:
        return self.room and not self.closed

    def write_nowait(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.drained.set()
            self._chunks.put_nowait(b"")

    def received(self) -> list[tuple[int, bytes]]:
        """Every frame written to this client so far."""
        return list(frames.FrameReader(frames.MAX_FRAME_SIZE).feed(bytes(self.written)))

    def packets(self) -> list[tuple[bytes, bytes]]:
        """(source, packet) of every RecvPacket frame written to this client so far."""
        return [
            (payload[:32], payload[32:])
            for frame_type, payload in self.received()
            if frame_type == FrameType.RECV_PACKET
        ]


class Session:
    def __init__(self, server: DerpServer) -> None:
        self.key = NodePrivate.generate()
        self.public = bytes(self.key.public())
        self.conn = MemoryConn()
        self.conn.feed(encode_client_info(self.key, server.public_key, ClientInfo()))
        self.task = asyncio.ensure_future(server.accept(self.conn))


@pytest.fixture
async def relay() -> AsyncIterator[tuple[DerpServer, Session, Session, Session]]:
    server = DerpServer(os.urandom(32))
    a, b, c = Session(server), Session(server), Session(server)
    await eventually(lambda: len(server.client_keys()) == 3)
    yield server, a, b, c
    await server.close(grace=1.0)
    for session in (a, b, c):
        await within(session.task)


def send(destination: bytes, packets: list[bytes]) -> bytes:
    return b"".join(frames.encode_send_packet(destination, packet) for packet in packets)


async def test_one_read_for_two_destinations_reaches_each_in_order(
    relay: tuple[DerpServer, Session, Session, Session],
) -> None:
    server, a, b, c = relay
    to_b = [b"b%d" % i + os.urandom(1200) for i in range(50)]
    to_c = [b"c%d" % i + os.urandom(1200) for i in range(50)]
    # Runs of 1 to 9 frames to each destination in turn, and a ping between, all in one read.
    stream = b""
    for i in range(0, 50, 5):
        stream += send(b.public, to_b[i : i + 5]) + send(c.public, to_c[i : i + 5])
        if i == 20:
            stream += frames.encode_ping(b"pingpong")
    a.conn.feed(stream)
    await eventually(lambda: len(b.conn.packets()) == 50 and len(c.conn.packets()) == 50)
    assert b.conn.packets() == [(a.public, packet) for packet in to_b]
    assert c.conn.packets() == [(a.public, packet) for packet in to_c]
    await eventually(lambda: (FrameType.PONG, b"pingpong") in a.conn.received())
    stats = server.stats()
    assert stats["packets_received"] == stats["packets_sent"] == 100
    assert stats["bytes_received"] == stats["bytes_sent"] == sum(map(len, to_b + to_c))


async def test_frames_cut_across_reads_are_relayed_whole(
    relay: tuple[DerpServer, Session, Session, Session],
) -> None:
    _, a, b, _ = relay
    packets = [os.urandom(1200) for _ in range(40)]
    stream = send(b.public, packets)
    for start in range(0, len(stream), 777):  # every read ends inside a frame
        a.conn.feed(stream[start : start + 777])
    await eventually(lambda: len(b.conn.packets()) == 40)
    assert b.conn.packets() == [(a.public, packet) for packet in packets]


async def test_a_run_never_overtakes_packets_queued_for_a_backed_up_destination(
    relay: tuple[DerpServer, Session, Session, Session],
) -> None:
    server, a, b, c = relay
    # b's socket is backed up: its writer waits on a write, and what c sends it next waits in b's queue.
    b.conn.room = False
    b.conn.drained.clear()
    first = b"first"
    c.conn.feed(send(b.public, [first]))
    await eventually(lambda: len(b.conn.packets()) == 1)
    queued = [b"queued %d" % i for i in range(3)]
    c.conn.feed(send(b.public, queued))
    await eventually(lambda: server.queued_packets(b.public) == 3)
    b.conn.room = True  # the socket says it has room, but the queue is not empty: a's run must go behind it
    later = [b"later %d" % i for i in range(5)]
    a.conn.feed(send(b.public, later))
    await eventually(lambda: server.queued_packets(b.public) == 8)
    assert b.conn.packets() == [(c.public, first)]
    b.conn.drained.set()
    await eventually(lambda: len(b.conn.packets()) == 9)
    assert b.conn.packets() == [(c.public, first)] + [(c.public, p) for p in queued] + [
        (a.public, p) for p in later
    ]


async def test_a_malformed_send_packet_in_a_run_ends_only_the_sender(
    relay: tuple[DerpServer, Session, Session, Session],
) -> None:
    server, a, b, _ = relay
    good = [b"good %d" % i for i in range(3)]
    short = frames.encode_frame(FrameType.SEND_PACKET, b"too short for a key")
    a.conn.feed(send(b.public, good) + short + send(b.public, [b"never"]))
    await within(a.task)
    assert b.conn.packets() == [(a.public, p) for p in good]  # what came before the bad frame was delivered
    assert server.client_keys() == {b.key.public(), relay[3].key.public()}


def test_batch_space_is_reused_only_when_the_transport_kept_none_of_it() -> None:
    scratch = BatchBuffer()
    first = scratch.fill(memoryview(b"first batch"))
    scratch.written(taken_whole=True)
    second = scratch.fill(memoryview(b"second"))
    assert second.obj is first.obj  # the same space, reused
    scratch.written(taken_whole=False)  # the transport keeps part of it to send later
    third = scratch.fill(memoryview(b"third!"))
    assert third.obj is not second.obj
    assert bytes(second) == b"second"  # what the transport still holds is never overwritten
