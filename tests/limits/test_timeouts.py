"""Issue 8 point 10: silent, slow and too many connections are closed within bounded time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.live_server import LiveServer, StartLive, open_map
from tests.ports import free_port

FAST = {"connections": {"header_timeout": "1s", "request_timeout": "1s", "idle_timeout": "1s"}}


async def closed_within(
    reader: asyncio.StreamReader,
    seconds: float,
    trickle: asyncio.StreamWriter | None = None,
    until: bytes | None = None,
) -> bytes:
    """Read until the server closes (or sends `until`), failing after `seconds`; with `trickle`, send a
    byte every 0.2 s meanwhile."""
    received = b""

    async def read_all() -> None:
        nonlocal received
        while chunk := await reader.read(65536):
            received += chunk
            if until is not None and until in received:
                return

    async def drip() -> None:
        while trickle is not None:
            await asyncio.sleep(0.2)
            trickle.write(b"X")

    dripper = asyncio.ensure_future(drip())
    try:
        await asyncio.wait_for(read_all(), seconds)
    except ConnectionResetError:
        pass
    finally:
        dripper.cancel()
    return received


async def test_silent_connection_closed(start_live: StartLive) -> None:
    live: LiveServer = await start_live(limits=FAST)
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    started = time.monotonic()
    await closed_within(reader, 10)
    assert time.monotonic() - started < 10
    writer.close()


async def test_slow_request_head_closed(start_live: StartLive) -> None:
    live: LiveServer = await start_live(limits=FAST)
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    await closed_within(reader, 10, trickle=writer)
    writer.close()


async def test_slow_request_body_answered_408(start_live: StartLive) -> None:
    live: LiveServer = await start_live(limits=FAST)
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    writer.write(b"POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
    received = await closed_within(reader, 10, trickle=writer, until=b"\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 408"), received[:100]
    assert b"Connection: close" in received
    writer.close()


async def test_connections_per_source_limited(start_live: StartLive) -> None:
    live: LiveServer = await start_live(limits={"connections": {"per_source": 4}})
    held = [await asyncio.open_connection("127.0.0.1", live.port) for _ in range(4)]
    await asyncio.sleep(0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    received = await closed_within(reader, 10)
    assert received.startswith(b"HTTP/1.1 503"), received[:100]
    assert b"from your address" in received
    refused = live.server.metrics.registry.get_sample_value(
        "pyheadscale_connections_refused_total", {"reason": "per_source"}
    )
    assert refused == 1
    for _, w in held:
        w.close()
    writer.close()
    await asyncio.sleep(0.2)
    # Closing them frees the slots.
    status_reader, status_writer = await asyncio.open_connection("127.0.0.1", live.port)
    status_writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await closed_within(status_reader, 10)).startswith(b"HTTP/1.1 200")
    status_writer.close()


async def test_idle_ts2021_connection_closed(start_live: StartLive) -> None:
    live: LiveServer = await start_live(limits=FAST)
    client = await live.client()
    started = time.monotonic()
    assert not client.closed
    await asyncio.wait_for(client._closed.wait(), 10)
    assert time.monotonic() - started < 10
    assert client.closed  # what a caller checks before reusing the connection
    assert not live.server.components.control.connections or await _drained(live)


async def _drained(live: LiveServer) -> bool:
    control: Any = live.server.components.control
    for _ in range(50):
        if not control.connections:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_busy_ts2021_connection_is_not_idle(start_live: StartLive) -> None:
    """An open map stream keeps its connection: idleness is counted only with no open request."""
    live: LiveServer = await start_live(limits=FAST)
    node = await live.node("streamer")
    reader = open_map(node)
    await reader.next()
    await asyncio.sleep(2.5)
    assert not node.client.closed
    await reader.close()


async def test_connection_idle_after_its_stream_ends_is_closed(start_live: StartLive) -> None:
    """A busy connection arms no idle timer; when its last request ends, the idle clock starts then."""
    live: LiveServer = await start_live(limits=FAST)
    node = await live.node("streamer")
    reader = open_map(node)
    await reader.next()
    await asyncio.sleep(1.5)  # longer than idle_timeout, while busy
    assert not node.client.closed
    await reader.close()  # resets the stream: the connection has no open request from now
    started = time.monotonic()
    await asyncio.wait_for(node.client._closed.wait(), 10)
    assert 0.5 < time.monotonic() - started < 10


def test_connection_capacity_respects_the_fd_limit(monkeypatch: Any) -> None:
    import resource

    from pyheadscale import listener

    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 1024))
    assert listener.connection_capacity(8192) == 1024 - listener.RESERVED_FDS
    assert listener.connection_capacity(100) == 100


async def test_silent_connection_to_metrics_listener_closed(start_live: StartLive) -> None:
    port = free_port()
    await start_live(limits=FAST, metrics_listen_addr=f"127.0.0.1:{port}")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    await closed_within(reader, 10)
    assert time.monotonic() - started < 10
    writer.close()
