"""DERP frames and the DERP handshake (derp/frames.py, derp/handshake.py, derp/server.py): decoders give a
value or ProtocolError, and a relay session fed anything, before or after a valid login, ends cleanly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from derp import frames
from derp.conn import Conn
from derp.frames import FrameType, ProtocolError
from derp.handshake import ClientInfo, ServerInfo, decode_client_info, decode_server_info
from derp.server import DerpServer
from pyheadscale.tailkey import DerpMeshKey, NodePrivate
from tests.fuzz import bounds
from tests.fuzz.seeds import deeply_nested, json_values, mutated_bytes

SERVER = NodePrivate.generate()
SERVER_PUBLIC = SERVER.public()
CLIENT = NodePrivate.generate()
CLIENT_INFOS = [
    ClientInfo().to_json(),
    ClientInfo(mesh_key=DerpMeshKey(bytes(32)), app_name="fuzz", is_prober=True).to_json(),
]
FRAME_TYPES = st.sampled_from([int(t) for t in FrameType]) | st.integers(0, 255)
info_texts = st.one_of(
    mutated_bytes(CLIENT_INFOS), json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=100)
)


@given(info_texts)
@example(deeply_nested(100_000).encode())
def test_client_info_json(raw: bytes) -> None:
    bounds.call("derp.client_info_json", ClientInfo.from_json, raw, allowed=(ProtocolError,))
    bounds.call("derp.server_info_json", ServerInfo.from_json, raw, allowed=(ProtocolError,))


def client_info_payload(cleartext: bytes, key: NodePrivate = CLIENT) -> bytes:
    return key.public() + key.seal_to(SERVER_PUBLIC, cleartext)


@given(FRAME_TYPES, st.one_of(info_texts.map(client_info_payload), st.binary(max_size=200)))
@example(FrameType.CLIENT_INFO, client_info_payload(deeply_nested(100_000).encode()))
def test_client_info_frame(frame_type: int, payload: bytes) -> None:
    bounds.call("derp.client_info", decode_client_info, SERVER, frame_type, payload, allowed=(ProtocolError,))
    bounds.call(
        "derp.server_info",
        decode_server_info,
        CLIENT,
        SERVER_PUBLIC,
        frame_type,
        payload,
        allowed=(ProtocolError,),
    )


@given(FRAME_TYPES, st.binary(max_size=200))
def test_frame_decoders(frame_type: int, payload: bytes) -> None:
    allowed = (ProtocolError,)
    bounds.call("derp.server_message", frames.decode_server_message, frame_type, payload, allowed=allowed)
    for decode in (
        frames.decode_send_packet,
        frames.decode_forward_packet,
        frames.decode_note_preferred,
        frames.decode_close_peer,
        frames.decode_ping,
    ):
        bounds.call(f"derp.{decode.__name__}", decode, payload, allowed=allowed)
    bounds.call("derp.header", frames.decode_header, payload[:5], allowed=allowed)


class MemoryConn(Conn):
    """A client connection whose bytes are given up front; what the server writes is counted."""

    def __init__(self, data: bytes) -> None:
        self.reader = asyncio.StreamReader()
        self.reader.feed_data(data)
        self.reader.feed_eof()
        self.written = 0
        self.closed = False
        self.remote_addr = ("192.0.2.1", 40000)

    async def read_exactly(self, n: int) -> bytes:
        if self.closed:
            raise ConnectionError("closed")
        return await self.reader.readexactly(n)

    async def read_some(self, limit: int = 1 << 16) -> bytes:
        if self.closed:
            raise ConnectionError("closed")
        return await self.reader.read(limit)

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionError("closed")
        self.written += len(data)

    def close(self) -> None:
        self.closed = True


@st.composite
def sessions(draw: st.DrawFn) -> bytes:
    """What a client sends: a login (often valid) and then frames of any type, some damaged."""
    login = frames.encode_frame(
        FrameType.CLIENT_INFO, client_info_payload(draw(st.sampled_from(CLIENT_INFOS)))
    )
    after = b"".join(
        frames.encode_frame(draw(FRAME_TYPES), draw(st.binary(max_size=80)))
        for _ in range(draw(st.integers(0, 6)))
    )
    after += b"".join(
        frames.encode_send_packet(SERVER_PUBLIC, draw(st.binary(max_size=40)))
        for _ in range(draw(st.integers(0, 2)))
    )
    data = login + after
    return draw(st.one_of(st.just(data), mutated_bytes([data]), st.binary(max_size=200)))


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


async def relay_session(data: bytes) -> int:
    server = DerpServer(SERVER, handshake_timeout=5.0, write_timeout=5.0)
    conn = MemoryConn(data)
    await server.accept(conn)
    await server.close(grace=0)
    return conn.written


@given(sessions())
@example(frames.encode_frame(FrameType.CLIENT_INFO, client_info_payload(deeply_nested(100_000).encode())))
def test_relay_session(loop: asyncio.AbstractEventLoop, data: bytes) -> None:
    bounds.run(loop, "derp.session", lambda: relay_session(data))
