"""Issue 8 point 9: unfinished HTTP/2 request bodies inside TS2021 pin bounded memory, for bounded time."""

from __future__ import annotations

import asyncio
from typing import Any

from pyheadscale.client.control import ControlClient
from pyheadscale.control.h2server import MAX_CLIENT_RESETS, MAX_HEADER_LIST_SIZE
from pyheadscale.tailkey import NodePrivate
from tests.live_server import LiveServer, StartLive, send_request_headers

MiB = 1 << 20


def open_unfinished(client: ControlClient, count: int) -> list[int]:
    """`count` register requests whose HEADERS promise a 1 MiB body that never ends."""
    return [send_request_headers(client, ("content-length", str(MiB))) for _ in range(count)]


async def push_bodies(client: ControlClient, ids: list[int], budget: int, stall: float = 1.0) -> int:
    """Send body bytes on `ids` as fast as the server's flow control allows, up to `budget` bytes in all,
    until it has granted nothing for `stall` seconds. Returns the bytes sent."""
    h2conn: Any = client._h2
    sent = 0
    chunk = b"x" * 16384
    while sent < budget:
        progressed = False
        for stream_id in ids:
            if client._streams[stream_id].reset:
                continue
            window = min(h2conn.local_flow_control_window(stream_id), len(chunk), budget - sent)
            if window > 0:
                h2conn.send_data(stream_id, chunk[:window])
                sent += window
                progressed = True
        await client._flush()
        if not progressed:
            client._window.clear()
            try:
                await asyncio.wait_for(client._window.wait(), stall)
            except TimeoutError:
                return sent
    return sent


async def test_unfinished_bodies_bounded_per_connection(start_live: StartLive) -> None:
    live: LiveServer = await start_live(limits={"http2": {"connection_buffer_bytes": MiB}})
    client = await live.client()
    ids = open_unfinished(client, 32)
    sent = await push_bodies(client, ids, 16 * MiB)
    # One connection buffer, plus the one window of credit already in flight when it filled.
    assert sent <= MiB + 2 * 65535, sent
    control: Any = live.server.components.control
    assert control.body_budget.used <= MiB + 2 * 65535


async def test_unfinished_bodies_bounded_across_connections(start_live: StartLive) -> None:
    live: LiveServer = await start_live(
        limits={"http2": {"connection_buffer_bytes": MiB, "total_buffer_bytes": MiB}}
    )
    total = 0
    for _ in range(4):
        client = await live.client()
        total += await push_bodies(client, open_unfinished(client, 8), 4 * MiB, stall=0.5)
    assert total <= MiB + 4 * 2 * 65535, total


async def test_request_deadline_resets_unfinished_stream(start_live: StartLive) -> None:
    live: LiveServer = await start_live(
        limits={"connections": {"request_timeout": "1s", "idle_timeout": "1m"}}
    )
    client = await live.client()
    ids = open_unfinished(client, 2)
    await push_bodies(client, ids, 1000, stall=0.1)

    for stream_id in ids:  # a reset stream's data queue ends with None
        while await asyncio.wait_for(client._streams[stream_id].data.get(), 10) is not None:
            pass
        assert client._streams[stream_id].reset
    control: Any = live.server.components.control
    assert control.body_budget.used == 0
    # The connection itself still serves complete requests.
    status, _ = await client.request("POST", "/machine/register", b"{}")
    assert status == 400


async def test_released_credit_lets_a_waiting_body_finish(start_live: StartLive) -> None:
    """Once stalled streams time out, the budget they held serves the next client's request."""
    live: LiveServer = await start_live(
        limits={
            "connections": {"request_timeout": "2s"},
            "http2": {"connection_buffer_bytes": MiB, "total_buffer_bytes": MiB},
        }
    )
    hog = await live.client()
    await push_bodies(hog, open_unfinished(hog, 8), 4 * MiB, stall=0.5)
    control: Any = live.server.components.control
    assert control.body_budget.exhausted
    client = await live.client()
    body = {
        "NodeKey": NodePrivate.generate().public().text,
        "Hostinfo": {"Hostname": "after-the-hog"},
        "Auth": {"AuthKey": await live.preauth_key()},
        "Padding": "x" * (256 << 10),  # more than the initial windows: it needs credit the hog holds
    }
    status, data = await asyncio.wait_for(client.request("POST", "/machine/register", body), 20)
    assert status == 200 and b'"MachineAuthorized": true' in data, data


async def test_rapid_reset_closes_the_connection(start_live: StartLive) -> None:
    """Opening and cancelling streams at once costs a task each; past the limit the connection is closed."""
    live: LiveServer = await start_live()
    client = await live.client()
    h2conn: Any = client._h2
    for _ in range(MAX_CLIENT_RESETS + 50):
        stream_id = send_request_headers(client, path="/machine/map", end_stream=True)
        h2conn.reset_stream(stream_id)
        await client._flush()
    await asyncio.wait_for(client._closed.wait(), 10)


async def test_oversized_request_headers_refused(start_live: StartLive) -> None:
    """Headers past MAX_HEADER_LIST_SIZE end the connection (h2 would take 64 KiB per stream otherwise)."""
    live: LiveServer = await start_live()
    client = await live.client()
    send_request_headers(client, ("x-padding", "p" * (MAX_HEADER_LIST_SIZE + 1024)))
    await client._flush()
    await asyncio.wait_for(client._closed.wait(), 10)
    node = await live.node("still-serving")
    assert node.register["MachineAuthorized"]
