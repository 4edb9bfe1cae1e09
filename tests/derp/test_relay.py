"""A DERP server relaying between Python clients over loopback."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import aiohttp
import pytest

from derp import frames
from derp.client import DerpClient
from derp.client_conn import MAX_WRITE_BATCH
from derp.conn import WRITE_HIGH_WATER
from derp.frames import PeerGoneReason
from derp.server import DUPLICATE_HEALTH_MESSAGE, DerpServer
from tests.derp.harness import eventually, serving, within

SEND_BUFFER_BOUND = WRITE_HIGH_WATER + 2 * (MAX_WRITE_BATCH + frames.MAX_FRAME_SIZE)


async def recv_packet(client: DerpClient) -> frames.ReceivedPacket:
    """Next relayed packet, skipping keepalives and other chatter."""
    while True:
        message = await within(client.recv())
        if isinstance(message, frames.ReceivedPacket):
            return message


async def recv_type(client: DerpClient, kind: type) -> frames.ServerMessage:
    while True:
        message = await within(client.recv())
        if isinstance(message, kind):
            return message


@pytest.fixture
async def pair(url: str) -> AsyncIterator[tuple[DerpClient, DerpClient]]:
    a = await DerpClient.connect(url)
    b = await DerpClient.connect(url)
    yield a, b
    await a.close()
    await b.close()


@pytest.mark.parametrize("websocket", [False, True], ids=["upgrade", "websocket"])
async def test_two_clients_exchange_packets(server: DerpServer, url: str, websocket: bool) -> None:
    a = await DerpClient.connect(url, websocket=websocket)
    b = await DerpClient.connect(url, websocket=websocket)
    try:
        assert a.server_public_key == server.public_key
        await eventually(lambda: server.client_keys() == {a.public_key, b.public_key})
        await a.send(b.public_key, b"hello b")
        assert await recv_packet(b) == frames.ReceivedPacket(a.public_key, b"hello b")
        big = os.urandom(frames.MAX_PACKET_SIZE)
        await b.send(a.public_key, big)
        assert await recv_packet(a) == frames.ReceivedPacket(b.public_key, big)
    finally:
        await a.close()
        await b.close()


async def test_peer_gone_when_sender_leaves(pair: tuple[DerpClient, DerpClient]) -> None:
    a, b = pair
    await a.send(b.public_key, b"remember me")
    await recv_packet(b)
    await a.close()
    gone = await recv_type(b, frames.PeerGone)
    assert gone == frames.PeerGone(a.public_key, PeerGoneReason.DISCONNECTED)


async def test_ping_pong(pair: tuple[DerpClient, DerpClient]) -> None:
    a, _ = pair
    await a.ping(b"pingdata")
    assert await recv_type(a, frames.Pong) == frames.Pong(b"pingdata")


async def test_server_sends_keepalives() -> None:
    server = DerpServer(os.urandom(32), keepalive_interval=0.05)
    async with serving(server) as url:
        client = await DerpClient.connect(url)
        try:
            assert await recv_type(client, frames.KeepAlive) == frames.KeepAlive()
            assert await recv_type(client, frames.KeepAlive) == frames.KeepAlive()
        finally:
            await client.close()


async def test_note_preferred_is_recorded(server: DerpServer, pair: tuple[DerpClient, DerpClient]) -> None:
    a, _ = pair
    await a.note_preferred(True)
    await eventually(lambda: server._clients[a.public_key].active.preferred)


async def test_disco_to_unknown_destination_gets_peer_gone_not_here(
    server: DerpServer, pair: tuple[DerpClient, DerpClient]
) -> None:
    a, _ = pair
    nobody = os.urandom(32)
    await a.send(nobody, frames.DISCO_MAGIC + os.urandom(80))
    assert await recv_type(a, frames.PeerGone) == frames.PeerGone(nobody, PeerGoneReason.NOT_HERE)
    assert server.stats()["drops"]["unknown_destination"] == 1


async def test_slow_reader_does_not_block_others_and_its_queue_stays_bounded() -> None:
    depth = 8
    server = DerpServer(os.urandom(32), send_queue_depth=depth, write_timeout=None)
    async with serving(server) as url:
        sender = await DerpClient.connect(url)
        fast = await DerpClient.connect(url)
        stalled = await DerpClient.connect(url)  # never reads
        try:
            chunk = os.urandom(60_000)
            # Far more than socket buffers can hold: ~60 MB.
            for _ in range(100):
                await sender.send_many(stalled.public_key, [chunk] * 10)
                assert server.queued_packets(stalled.public_key) <= depth
                # Full queues are written straight to the socket only below its high-water mark: what waits
                # in the transport stays within that mark plus two writes' worth, however much is sent.
                assert server.send_buffer_bytes(stalled.public_key) <= SEND_BUFFER_BOUND
            await eventually(lambda: server.stats()["drops"]["queue_head"] > 0)
            for i in range(20):
                await sender.send(fast.public_key, b"fast %d" % i)
                assert (await recv_packet(fast)).data == b"fast %d" % i
            assert server.queued_packets(stalled.public_key) <= depth
        finally:
            for client in (sender, fast, stalled):
                await client.close()


async def test_burst_beyond_the_queue_depth_reaches_a_reading_client_without_drops() -> None:
    """A queue fills within one read of the sender's stream: it is written out, not dropped, while the
    receiver's socket has room (the queue bounds what waits on a backed-up receiver, not a burst)."""
    depth = 8
    server = DerpServer(os.urandom(32), send_queue_depth=depth)
    async with serving(server) as url:
        sender = await DerpClient.connect(url)
        receiver = await DerpClient.connect(url)
        try:
            burst = [b"packet %d" % i for i in range(20 * depth)]
            await sender.send_many(receiver.public_key, burst)
            assert [(await recv_packet(receiver)).data for _ in burst] == burst
            assert server.stats()["drops"]["queue_head"] == 0
        finally:
            await sender.close()
            await receiver.close()


async def test_stalled_writer_times_out_and_is_disconnected() -> None:
    server = DerpServer(os.urandom(32), send_queue_depth=4, write_timeout=0.2)
    async with serving(server) as url:
        sender = await DerpClient.connect(url)
        stalled = await DerpClient.connect(url)
        try:
            chunk = os.urandom(60_000)
            for _ in range(200):
                if not server.is_client_connected(stalled.public_key):
                    break
                await sender.send_many(stalled.public_key, [chunk] * 10)
            await eventually(lambda: not server.is_client_connected(stalled.public_key))
            assert server.is_client_connected(sender.public_key)
        finally:
            await sender.close()
            await stalled.close()


@pytest.mark.parametrize(
    "bad_frame",
    [
        frames.encode_header(frames.FrameType.SEND_PACKET, frames.MAX_FRAME_SIZE + 1),
        frames.encode_header(0x7F, 10 << 20),
        frames.encode_frame(frames.FrameType.SEND_PACKET, b"too short for a key"),
        frames.encode_frame(frames.FrameType.NOTE_PREFERRED, b"\x01\x01"),
        frames.encode_frame(frames.FrameType.PING, b"1234"),
        frames.encode_watch_conns(),  # needs the mesh key
        frames.encode_close_peer(bytes(32)),  # needs the mesh key
        frames.encode_forward_packet(bytes(32), bytes(32), b"x"),  # needs the mesh key
    ],
    ids=[
        "oversized",
        "oversized-unknown",
        "short-send",
        "bad-preferred",
        "short-ping",
        "watch",
        "close",
        "fwd",
    ],
)
async def test_protocol_violation_closes_only_the_offender(
    server: DerpServer, url: str, pair: tuple[DerpClient, DerpClient], bad_frame: bytes
) -> None:
    a, b = pair
    offender = await DerpClient.connect(url)
    try:
        await eventually(lambda: server.is_client_connected(offender.public_key))
        await offender.write_raw(bad_frame)
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await within(offender.recv())
        await eventually(lambda: not server.is_client_connected(offender.public_key))
        await a.send(b.public_key, b"still relaying")
        assert (await recv_packet(b)).data == b"still relaying"
    finally:
        await offender.close()


async def test_unknown_frame_types_within_limits_are_ignored(pair: tuple[DerpClient, DerpClient]) -> None:
    a, b = pair
    await a.write_raw(frames.encode_frame(0x7E, b"from the future"))
    await a.send(b.public_key, b"after")
    assert (await recv_packet(b)).data == b"after"


async def test_login_garbage_is_refused_without_registering(server: DerpServer, url: str) -> None:
    host, port = url.split("//")[1].split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n")
    await writer.drain()
    head = await within(reader.readuntil(b"\r\n\r\n"))
    assert head.startswith(b"HTTP/1.1 101 ")
    greeting = await within(reader.readexactly(5 + 8 + 32))
    assert greeting[5:13] == frames.MAGIC
    writer.write(frames.encode_frame(frames.FrameType.CLIENT_INFO, os.urandom(100)))
    await writer.drain()
    assert await within(reader.read()) == b""  # the server hangs up
    assert server.connection_count() == 0
    writer.close()


async def test_garbage_and_tls_hello_on_http_port_leave_server_serving(server: DerpServer, url: str) -> None:
    host, port = url.split("//")[1].split("/")[0].split(":")
    tls_client_hello = bytes.fromhex("16030100f8010000f40303") + os.urandom(245)
    for junk in (tls_client_hello, os.urandom(4096), b"\x00" * 100 + b"\r\n\r\n", b"GET /derp\r\n\r\n"):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(junk)
        await writer.drain()
        response = await within(reader.read(1024))
        assert not response or response.startswith(b"HTTP/")
        writer.close()
    client_a = await DerpClient.connect(url)
    client_b = await DerpClient.connect(url)
    try:
        await client_a.send(client_b.public_key, b"ok")
        assert (await recv_packet(client_b)).data == b"ok"
    finally:
        await client_a.close()
        await client_b.close()


async def test_duplicate_connections_get_health_and_last_sender_is_active(
    server: DerpServer, url: str, pair: tuple[DerpClient, DerpClient]
) -> None:
    a, b = pair
    twin = await DerpClient.connect(url, a._private_key)
    try:
        assert await recv_type(a, frames.Health) == frames.Health(DUPLICATE_HEALTH_MESSAGE)
        assert await recv_type(twin, frames.Health) == frames.Health(DUPLICATE_HEALTH_MESSAGE)
        await b.send(a.public_key, b"to newest")
        assert (await recv_packet(twin)).data == b"to newest"
        await a.send(b.public_key, b"i am back")  # sending makes a the active one
        await recv_packet(b)
        await b.send(a.public_key, b"to a")
        assert (await recv_packet(a)).data == b"to a"
    finally:
        await twin.close()
    assert await recv_type(a, frames.Health) == frames.Health("")
    assert server.connection_count() == 2


async def test_close_sends_restarting_notice(server: DerpServer, url: str) -> None:
    client = await DerpClient.connect(url)
    try:
        await server.close(restart_notice=(0.5, 10.0))
        assert await recv_type(client, frames.ServerRestarting) == frames.ServerRestarting(0.5, 10.0)
        assert server.connection_count() == 0
    finally:
        await client.close()


async def test_http_endpoints(url: str) -> None:
    base = url.removesuffix("/derp")
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/derp") as response:
            assert response.status == 426
        for path in ("/derp/probe", "/derp/latency-check"):
            async with session.get(base + path) as response:
                assert response.status == 200
                assert response.headers["Access-Control-Allow-Origin"] == "*"
            async with session.head(base + path) as response:
                assert response.status == 200
            async with session.post(base + path) as response:
                assert response.status == 405
        headers = {"X-Tailscale-Challenge": "ts_abc-123:x.y"}
        async with session.get(base + "/generate_204", headers=headers) as response:
            assert response.status == 204
            assert response.headers["X-Tailscale-Response"] == "response ts_abc-123:x.y"
        async with session.get(base + "/generate_204", headers={"X-Tailscale-Challenge": "bad value!"}) as r:
            assert r.status == 204
            assert "X-Tailscale-Response" not in r.headers
        async with session.get(base + "/generate_204", headers={"X-Tailscale-Challenge": "a" * 65}) as r:
            assert "X-Tailscale-Response" not in r.headers


async def test_app_shutdown_disconnects_connected_clients() -> None:
    server = DerpServer(os.urandom(32))
    async with asyncio.timeout(15):
        async with serving(server) as url:
            client = await DerpClient.connect(url)
            await eventually(lambda: server.connection_count() == 1)
        # Leaving serving() ran the app's shutdown, whose hook closes the DERP server.
        assert server.closed
        assert server.connection_count() == 0
        try:
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                await within(client.recv())
        finally:
            await client.close()
