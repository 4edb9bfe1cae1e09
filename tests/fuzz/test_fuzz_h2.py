"""HTTP/2 inside Noise (pyheadscale/control/h2server.py): whatever a client sends after the handshake, well
formed, malformed or cut short, the server answers or closes the connection, and serve() ends once the client
has gone, without an exception."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import cast

import h2.config
import h2.connection
import h2.events
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyheadscale.control.h2server import H2Limits, H2Server, InnerRequest
from pyheadscale.control.noise_stream import NoiseStream
from tests.fuzz import bounds
from tests.fuzz.seeds import mutated_bytes, recorded_requests

RECORDED = recorded_requests()
header_text = st.text(st.characters(codec="latin-1"), max_size=40)


@st.composite
def client_traffic(draw: st.DrawFn) -> list[bytes]:
    """What a client writes, in the chunks it writes it: requests built with h2's client side (some with
    odd headers), then possibly damaged bytes."""
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
    )
    client = h2.connection.H2Connection(config=config)
    client.initiate_connection()
    for _ in range(draw(st.integers(0, 4))):
        record = draw(st.sampled_from(RECORDED))
        stream_id = client.get_next_available_stream_id()
        headers = [
            (":method", draw(st.sampled_from([record["method"], "GET", "PUT", ""]))),
            (":path", draw(st.sampled_from([record["path"], "/", "/machine/x?y=%zz&q", "*", ""]))),
            (":scheme", "http"),
            (":authority", "control"),
        ]
        headers += draw(st.lists(st.tuples(header_text, header_text), max_size=3))
        body = record["body"].encode()
        end_now = draw(st.booleans())
        client.send_headers(stream_id, headers, end_stream=end_now and not body)
        if not end_now or body:
            client.send_data(
                stream_id, body[: draw(st.integers(0, len(body)))], end_stream=draw(st.booleans())
            )
    data = client.data_to_send()
    data = draw(
        st.one_of(st.just(data), mutated_bytes([data]), st.binary(max_size=200).map(lambda b: data + b))
    )
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=5)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True) if data[a:b]]


class FakeStream:
    """Stands for the NoiseStream: hands out the client's chunks, then the end of the stream."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.output = b""

    async def read(self) -> bytes:
        if self.chunks:
            await asyncio.sleep(0)
            return self.chunks.pop(0)
        for _ in range(10):  # let the handlers of complete requests answer before the client goes
            await asyncio.sleep(0)
        return b""

    async def write(self, data: bytes) -> None:
        self.output += data


async def handler(request: InnerRequest) -> None:
    await request.response.respond(200, b'{"ok": true}')


async def serve(chunks: list[bytes]) -> bytes:
    stream = FakeStream(chunks)
    await H2Server(cast(NoiseStream, stream), handler, H2Limits(preface_timeout=5.0)).serve()
    return stream.output


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@given(client_traffic())
def test_http2_inside_noise(loop: asyncio.AbstractEventLoop, chunks: list[bytes]) -> None:
    output = bounds.run(loop, "h2", lambda: serve(chunks))
    assert output, "the server always announces its settings"


def test_the_harness_reaches_the_handler(loop: asyncio.AbstractEventLoop) -> None:
    client = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    headers = [(":method", "GET"), (":path", "/x"), (":scheme", "http"), (":authority", "c")]
    client.send_headers(1, headers, end_stream=True)
    output = loop.run_until_complete(serve([client.data_to_send()]))
    events = client.receive_data(output)
    responses = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert [dict(r.headers)[b":status"] for r in responses] == [b"200"]
