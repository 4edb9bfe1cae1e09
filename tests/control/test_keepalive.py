"""Keep-alives from one timer wheel (pyheadscale/control/keepalive.py), and the synchronous write path they
take through HTTP/2 and Noise (H2Server.send_data_nowait, NoiseStream.write_nowait)."""

from __future__ import annotations

import asyncio
import os
import re
from types import SimpleNamespace
from typing import cast

import h2.config
import h2.connection
import h2.events
from prometheus_client import generate_latest

from pyheadscale.control import noise
from pyheadscale.control.h2server import H2Server, InnerRequest, ResponseStream, StreamClosed
from pyheadscale.control.keepalive import KeepAliveWheel, Outcome
from pyheadscale.control.noise_stream import NoiseStream
from pyheadscale.control.poll import MapHandler, StreamKeepAlive
from pyheadscale.mapper.distributor import MapSession
from tests.conftest import StartLive
from tests.live_server import open_map

INTERVAL = 10.0
TICK = 1.0
SERVING: set[asyncio.Future[None]] = set()  # the H2Servers under test, until their stream ends


class FakeStream:
    """A stream as the wheel sees it; `outcomes` are what its keep-alives answer, in turn."""

    def __init__(self, last_sent: float, *outcomes: Outcome) -> None:
        self.last_sent = last_sent
        self.outcomes = list(outcomes) or ["sent"]
        self.calls: list[float] = []
        self.now = 0.0

    def keep_alive(self) -> Outcome:
        self.calls.append(self.now)
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if outcome == "sent":
            self.last_sent = self.now
        return outcome


def run(wheel: KeepAliveWheel, streams: list[FakeStream], start: float, end: float) -> list[int]:
    """Tick the wheel from `start` to `end`; how many it sent at each tick."""
    sent = []
    now = start
    while now <= end:
        for stream in streams:
            stream.now = now
        sent.append(wheel.run_due(now))
        now += TICK
    return sent


def test_a_quiet_stream_gets_a_keepalive_once_an_interval() -> None:
    counted: list[int] = []
    wheel = KeepAliveWheel(INTERVAL, tick=TICK, on_sent=counted.append)
    stream = FakeStream(1000.0)
    wheel.add(stream)
    run(wheel, [stream], 1000.0, 1000.0 + 3.5 * INTERVAL)
    assert len(stream.calls) == 3
    gaps = [b - a for a, b in zip([1000.0, *stream.calls], stream.calls, strict=False)]
    # each after its interval (jittered by up to a tenth) of quiet, to the next tick
    assert all(INTERVAL <= gap <= INTERVAL * 1.1 + TICK for gap in gaps), gaps
    assert counted == [1, 1, 1]


def test_a_stream_that_wrote_is_not_sent_one_until_quiet_for_an_interval() -> None:
    wheel = KeepAliveWheel(INTERVAL, tick=TICK)
    stream = FakeStream(1000.0)
    wheel.add(stream)
    run(wheel, [stream], 1000.0, 1000.0 + 8)
    stream.last_sent = 1008.5  # a map message went out
    run(wheel, [stream], 1009.0, 1000.0 + 17)
    assert stream.calls == []  # its first due time passed while it was not quiet
    run(wheel, [stream], 1018.0, 1008.5 + 1.1 * INTERVAL + TICK)
    assert len(stream.calls) == 1 and stream.calls[0] >= 1008.5 + INTERVAL


def test_a_busy_stream_is_tried_again_next_tick_and_an_ended_one_dropped() -> None:
    wheel = KeepAliveWheel(INTERVAL, tick=TICK)
    busy = FakeStream(1000.0, "busy", "busy", "sent")
    ended = FakeStream(1000.0, "ended")
    wheel.add(busy)
    wheel.add(ended)
    run(wheel, [busy, ended], 1000.0, 1000.0 + 2 * INTERVAL)
    first = busy.calls[0]
    assert busy.calls[:3] == [first, first + TICK, first + 2 * TICK]
    assert len(ended.calls) == 1
    assert len(wheel) == 1


def test_a_stream_whose_keepalive_raises_is_dropped_and_the_others_still_get_theirs() -> None:
    class Broken(FakeStream):
        def keep_alive(self) -> Outcome:
            raise RuntimeError("broken stream")

    wheel = KeepAliveWheel(INTERVAL, tick=TICK)
    streams = [FakeStream(1000.0), Broken(1000.0), FakeStream(1000.0)]
    for stream in streams:
        wheel.add(stream)
    run(wheel, streams, 1000.0, 1000.0 + 2.5 * INTERVAL)
    assert len(streams[0].calls) == 2 and len(streams[2].calls) == 2
    assert len(wheel) == 2


def test_a_discarded_stream_gets_nothing_and_holds_nothing() -> None:
    wheel = KeepAliveWheel(INTERVAL, tick=TICK)
    streams = [FakeStream(1000.0) for _ in range(100)]
    for stream in streams:
        wheel.add(stream)
    for stream in streams:
        wheel.discard(stream)
    run(wheel, streams, 1000.0, 1000.0 + 2 * INTERVAL)
    assert not any(s.calls for s in streams)
    assert len(wheel) == 0 and not wheel._buckets


def test_streams_opened_together_fall_due_spread_over_a_tenth_of_the_interval() -> None:
    interval = 50.0  # the server's: its tenth is five ticks
    wheel = KeepAliveWheel(interval, tick=TICK)
    streams = [FakeStream(1000.0) for _ in range(200)]
    for stream in streams:
        wheel.add(stream)
    sent = run(wheel, streams, 1000.0, 1000.0 + 1.1 * interval + TICK)
    assert sum(sent) == 200
    assert sum(1 for n in sent if n) >= 5 and max(sent) < 100  # over the ticks of the jitter, not in one


class WritableStream:
    """Stands for the NoiseStream under H2Server: records each write, sync or not; `can_write` says whether
    the transport would take a synchronous write."""

    def __init__(self, incoming: bytes) -> None:
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.incoming.put_nowait(incoming)
        self.writes: list[bytes] = []
        self.can_write = True
        self.held: asyncio.Event | None = None  # set: async writes wait for it

    async def read(self) -> bytes:
        return await self.incoming.get()

    async def write(self, data: bytes) -> None:
        if self.held is not None:
            await self.held.wait()
        self.writes.append(data)

    def writable_now(self) -> bool:
        return self.can_write

    def write_nowait(self, data: bytes) -> None:
        self.writes.append(data)


async def _streaming_response() -> tuple[
    h2.connection.H2Connection, WritableStream, ResponseStream, H2Server
]:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(
        1, [(":method", "POST"), (":path", "/m"), (":scheme", "http"), (":authority", "c")], end_stream=True
    )
    stream = WritableStream(client.data_to_send())
    opened: asyncio.Future[ResponseStream] = asyncio.get_running_loop().create_future()

    async def handler(request: InnerRequest) -> None:
        await request.response.start(200, {"content-type": "application/json"})
        opened.set_result(request.response)
        await asyncio.Event().wait()

    server = H2Server(stream, handler)  # type: ignore[arg-type]
    serving = asyncio.ensure_future(server.serve())
    response = await asyncio.wait_for(opened, 10)
    SERVING.add(serving)
    serving.add_done_callback(SERVING.discard)
    for data in stream.writes:
        client.receive_data(data)
    stream.writes.clear()
    return client, stream, response, server


async def test_a_keepalive_goes_out_at_once_as_one_data_frame() -> None:
    client, stream, response, _ = await _streaming_response()
    assert response.send_nowait(b"KEEPALIVE")
    assert len(stream.writes) == 1
    events = client.receive_data(stream.writes[0])
    assert [(type(e), getattr(e, "data", None)) for e in events] == [(h2.events.DataReceived, b"KEEPALIVE")]
    stream.incoming.put_nowait(b"")


async def test_no_synchronous_write_while_a_flush_is_under_way_or_the_transport_is_full() -> None:
    """Bytes another writer has taken from h2 are not yet written: a keep-alive written past them would
    reach the client first, so it waits (the wheel tries next tick); nothing is queued in h2 either."""
    client, stream, response, server = await _streaming_response()
    stream.held = asyncio.Event()
    sending = asyncio.ensure_future(response.send(b"DELTA"))
    await asyncio.sleep(0)
    assert not sending.done()
    assert not response.send_nowait(b"KEEPALIVE")
    stream.held.set()
    await sending
    stream.can_write = False
    assert not response.send_nowait(b"KEEPALIVE")
    await server.flush()
    received = [
        e.data
        for data in stream.writes
        for e in client.receive_data(data)
        if isinstance(e, h2.events.DataReceived)
    ]
    assert received == [b"DELTA"]
    stream.incoming.put_nowait(b"")


async def test_no_synchronous_write_past_the_flow_control_window() -> None:
    client, stream, response, _ = await _streaming_response()
    window = client.remote_flow_control_window(1)  # what the server may still send on stream 1
    assert not response.send_nowait(b"x" * (window + 1))
    assert stream.writes == []
    stream.incoming.put_nowait(b"")


KEY = os.urandom(32)


class Direct:
    def __init__(self) -> None:
        self.room = True
        self.written: list[bytes] = []

    def has_room(self) -> bool:
        return self.room

    def write_nowait(self, data: bytes) -> None:
        self.written.append(data)


def _noise_stream(direct: Direct | None, **kwargs: bytes) -> tuple[NoiseStream, list[bytes]]:
    delivered: list[bytes] = []

    async def write(data: bytes) -> None:
        delivered.append(data)

    async def no_bytes() -> bytes:
        return b""

    session = noise.Session(
        version=130,
        peer_static=bytes(32),
        send=noise.TransportCipher(KEY),
        recv=noise.TransportCipher(os.urandom(32)),
        handshake_hash=bytes(32),
    )
    return NoiseStream(session, no_bytes, write, direct=direct, **kwargs), delivered


async def test_noise_records_written_either_way_open_in_order() -> None:
    direct = Direct()
    stream, delivered = _noise_stream(direct)
    await stream.write(b"one")
    assert stream.writable_now()
    stream.write_nowait(b"two")
    await stream.write(b"three")
    opened = noise.RecordDecoder(noise.TransportCipher(KEY)).feed(
        delivered[0] + direct.written[0] + delivered[1]
    )
    assert opened == [b"one", b"two", b"three"]


async def test_noise_is_not_writable_at_once_without_room_during_a_write_or_before_the_preamble() -> None:
    assert not _noise_stream(None)[0].writable_now()  # a WebSocket: asynchronous writes only
    assert not _noise_stream(Direct(), preamble=b"PRE")[0].writable_now()
    direct = Direct()
    stream, _ = _noise_stream(direct)
    direct.room = False
    assert not stream.writable_now()
    direct.room = True
    gate = asyncio.Event()

    async def slow(data: bytes) -> None:
        await gate.wait()

    stream._write = slow
    writing = asyncio.ensure_future(stream.write(b"slow"))
    await asyncio.sleep(0)
    assert not stream.writable_now()
    gate.set()
    await writing
    assert stream.writable_now()


async def test_idle_streams_get_keepalives_counted_in_the_metrics(start_live: StartLive) -> None:
    live = await start_live(keepalive=0.5)
    readers = [open_map(await live.node(f"idle-{i}")) for i in range(3)]
    try:
        for reader in readers:
            await reader.next()
        for reader in readers:
            for _ in range(2):
                assert await reader.wait_for(lambda m: m.get("KeepAlive") is True, 5.0) == {"KeepAlive": True}
        text = generate_latest(live.server.components.metrics.registry).decode()
        counted = re.search(r'^pyheadscale_map_messages_total\{kind="keepalive"\} (\S+)$', text, re.M)
        assert counted is not None and float(counted.group(1)) >= 6
    finally:
        for reader in readers:
            await reader.close()


async def test_a_stream_that_keeps_writing_gets_no_keepalives(start_live: StartLive) -> None:
    """Its messages keep it alive: a keep-alive is only for a stream quiet for the interval."""
    live = await start_live(keepalive=1.0)
    a = await live.node("talker")
    b = await live.node("listener")
    reader = open_map(b)
    try:
        await reader.next()
        start = len(reader.messages)
        for i in range(8):  # a change to a peer every 0.3 s for 2.4 s: more than two intervals
            update = {"Version": 130, "NodeKey": a.node_key_text, "OmitPeers": True}
            status, _ = await a.client.request(
                "POST", "/machine/map", update | {"Endpoints": [f"192.0.2.1:{i + 1}"]}
            )
            assert status == 200
            await asyncio.sleep(0.3)
        messages = reader.messages[start:]
        assert sum(1 for m in messages if m.get("PeersChangedPatch")) >= 4, messages
        assert not any(m.get("KeepAlive") for m in messages)
    finally:
        await reader.close()


class _Response:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def send_nowait(self, data: bytes) -> bool:
        if self.error is not None:
            raise self.error
        return True


class _Store:
    nodes: dict[int, object] = {}


async def test_a_stream_found_gone_by_its_keepalive_is_ended_by_its_own_task() -> None:
    """The wheel's write is the one that finds a dead connection: the stream's task must still end (and
    leave the distributor), as it would had its own write failed."""
    handler = cast(MapHandler, SimpleNamespace(store=_Store()))
    for error in (StreamClosed("connection closed"), noise.NoiseError("cipher broken")):
        session = MapSession(1, 130)
        keepalive = StreamKeepAlive(handler, session, cast(ResponseStream, _Response(error)), b"KA")
        assert keepalive.keep_alive() == "ended"
        assert session.closed and session.wake.is_set()
