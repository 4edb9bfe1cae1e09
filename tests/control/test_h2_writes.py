"""What the HTTP/2 server writes into the Noise stream, counted: a whole response is one write."""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events
import h2.settings

from pyheadscale.control.h2server import MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE, H2Server, InnerRequest


class CountingStream:
    """Stands for the NoiseStream: the client's bytes in, each write the server makes recorded."""

    def __init__(self, incoming: bytes) -> None:
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.incoming.put_nowait(incoming)
        self.writes: list[bytes] = []

    async def read(self) -> bytes:
        return await self.incoming.get()

    async def write(self, data: bytes) -> None:
        self.writes.append(data)


async def test_a_whole_response_goes_out_in_one_write() -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(
        1, [(":method", "GET"), (":path", "/x"), (":scheme", "http"), (":authority", "c")], end_stream=True
    )
    stream = CountingStream(client.data_to_send())
    answered = asyncio.Event()

    async def handler(request: InnerRequest) -> None:
        stream.writes.clear()  # what came before (SETTINGS, their ACK) is not the response
        await request.response.respond(200, b"hello", "text/plain")
        answered.set()

    server = H2Server(stream, handler)  # type: ignore[arg-type]
    serving = asyncio.ensure_future(server.serve())
    await asyncio.wait_for(answered.wait(), 10)
    assert len(stream.writes) == 1
    events = client.receive_data(stream.writes[0])
    kinds = [type(e) for e in events]
    assert kinds[:2] == [h2.events.ResponseReceived, h2.events.DataReceived]
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)
    data = next(e for e in events if isinstance(e, h2.events.DataReceived))
    assert data.data == b"hello"
    stream.incoming.put_nowait(b"")
    await asyncio.wait_for(serving, 10)


async def test_the_preface_is_one_settings_frame_with_our_limits() -> None:
    """The server's limits are in its first SETTINGS frame, not in a second one after h2's defaults."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    stream = CountingStream(client.data_to_send())

    async def handler(request: InnerRequest) -> None:
        await request.response.respond(200, b"", "text/plain")

    serving = asyncio.ensure_future(H2Server(stream, handler).serve())  # type: ignore[arg-type]
    for _ in range(100):
        if len(stream.writes) >= 2:
            break
        await asyncio.sleep(0.01)
    preface = stream.writes[0]
    events = client.receive_data(preface)
    assert len(events) == 1 and isinstance(events[0], h2.events.RemoteSettingsChanged)
    changed = {code: setting.new_value for code, setting in events[0].changed_settings.items()}
    assert changed[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == MAX_CONCURRENT_STREAMS
    assert changed[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] == MAX_HEADER_LIST_SIZE
    # Only the ACK of the client's SETTINGS follows: nothing of ours is left to acknowledge.
    assert [type(e) for e in client.receive_data(b"".join(stream.writes[1:]))] == [
        h2.events.SettingsAcknowledged
    ]
    stream.incoming.put_nowait(b"")
    await asyncio.wait_for(serving, 10)


async def test_the_header_list_limit_holds_before_the_client_acknowledges_it() -> None:
    """A request whose headers pass MAX_HEADER_LIST_SIZE (but not h2's default 64 KiB), sent with the preface
    before the client has even read our SETTINGS, ends the connection without reaching the handler."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    padding = ("x-padding", "p" * (MAX_HEADER_LIST_SIZE + 1024))
    request = [(":method", "GET"), (":path", "/x"), (":scheme", "http"), (":authority", "c"), padding]
    client.send_headers(1, request, end_stream=True)
    stream = CountingStream(client.data_to_send())
    handled: list[InnerRequest] = []

    async def handler(request: InnerRequest) -> None:
        handled.append(request)
        await request.response.respond(200, b"", "text/plain")

    await asyncio.wait_for(H2Server(stream, handler).serve(), 10)  # type: ignore[arg-type]
    assert handled == []
    events = client.receive_data(b"".join(stream.writes))
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
