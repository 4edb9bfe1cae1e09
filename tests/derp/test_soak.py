"""Churn: many clients come and go; the server must end with empty tables and no stray tasks."""

from __future__ import annotations

import asyncio
import os
import random

from derp import frames
from derp.client import DerpClient
from derp.server import DerpServer
from tests.derp.harness import eventually, serving, within

WAVES = 8
CLIENTS_PER_WAVE = 25


async def misbehave(url: str) -> None:
    """Connect, then send an oversized frame header; the server must hang up on us."""
    client = await DerpClient.connect(url)
    try:
        await client.write_raw(frames.encode_header(frames.FrameType.SEND_PACKET, 1 << 30))
        try:
            while True:
                await within(client.recv())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
    finally:
        await client.close()


async def wave(url: str, rng: random.Random) -> None:
    clients = await asyncio.gather(
        *(DerpClient.connect(url, websocket=rng.random() < 0.3) for _ in range(CLIENTS_PER_WAVE))
    )
    try:
        for sender in clients:
            await sender.send(rng.choice(clients).public_key, os.urandom(rng.randrange(1, 1500)))
        # Half leave abruptly without reading; the rest drain until the server answers a ping.
        for client in clients[: CLIENTS_PER_WAVE // 2]:
            await client.close()
        for client in clients[CLIENTS_PER_WAVE // 2 :]:
            await client.ping(b"soak0000")
            while not isinstance(await within(client.recv()), frames.Pong):
                pass
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_churn_leaves_no_clients_and_no_tasks() -> None:
    server = DerpServer(os.urandom(32))
    rng = random.Random(1234)
    async with serving(server) as url:
        baseline = len(asyncio.all_tasks())
        for _ in range(WAVES):
            await asyncio.gather(wave(url, rng), misbehave(url))
        await eventually(lambda: server.connection_count() == 0)
        await eventually(lambda: len(asyncio.all_tasks()) <= baseline)
        assert server.client_keys() == set()
        assert server._peer_gone_watchers == {}
        assert server._watchers == set()
        stats = server.stats()
        assert stats["packets_received"] == WAVES * CLIENTS_PER_WAVE
        # Every packet is accounted for: delivered, or dropped for a recorded reason.
        drops = stats["drops"]
        accounted = stats["packets_sent"] + drops["gone"] + drops["unknown_destination"] + drops["queue_head"]
        assert accounted == stats["packets_received"]
    await server.close()


async def test_churn_leaks_no_memory() -> None:
    """After a warm-up (caches, pools, first-use allocations), more churn must not grow what Python holds."""
    import gc
    import tracemalloc

    server = DerpServer(os.urandom(32))
    rng = random.Random(99)
    async with serving(server) as url:
        for _ in range(3):
            await asyncio.gather(wave(url, rng), misbehave(url))
        await eventually(lambda: server.connection_count() == 0)
        gc.collect()
        tracemalloc.start()
        try:
            baseline, _ = tracemalloc.get_traced_memory()
            for _ in range(WAVES):
                await asyncio.gather(wave(url, rng), misbehave(url))
            await eventually(lambda: server.connection_count() == 0)
            gc.collect()
            current, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    await server.close()
    # 200 more connections came and went; a leak of even one small object per connection would show here.
    print(f"traced memory after churn: {current - baseline:+} bytes")
    assert current - baseline < 64 * 1024, f"relay held {current - baseline} more bytes after the churn"
