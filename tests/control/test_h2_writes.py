"""What the HTTP/2 server writes into the Noise stream, counted: a whole response is one write."""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events

from pyheadscale.control.h2server import H2Server, InnerRequest


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
