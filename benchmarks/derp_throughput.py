"""Relay throughput and latency between two DERP clients over loopback.

The server runs in its own process (as in production, so clients and server
do not share a CPU's event loop); both clients run in this process.

* latency: one 1,200-byte packet in flight at a time; the sender stamps it
  with a monotonic clock the receiver reads, so this is one-way latency.
* throughput: the sender keeps a window of packets in flight, smaller than
  the server's per-client queue, so the figure is relay capacity rather than
  how fast the server can drop packets.

Runs are bounded by packet count and by wall time.  Usage:

    python benchmarks/derp_throughput.py [--packets 50000] [--seconds 10] [--loops asyncio,uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp import web

from derp import frames
from derp.client import DerpClient
from derp.http import add_derp_routes
from derp.server import DEFAULT_SEND_QUEUE_DEPTH, DerpServer

PACKET_SIZE = 1200
WINDOW = DEFAULT_SEND_QUEUE_DEPTH * 3 // 4
BATCH = 16
_STAMP = struct.Struct(">QQ")  # sequence number, send time in ns


T = TypeVar("T")


def run_on(loop_name: str, coro: Coroutine[Any, Any, T]) -> T:
    if loop_name == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def serve_forever(loop_name: str, port: int) -> None:
    async def serve() -> None:
        app = web.Application()
        add_derp_routes(app, DerpServer(bytes(range(32))))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    run_on(loop_name, serve())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def packet(seq: int) -> bytes:
    return _STAMP.pack(seq, time.perf_counter_ns()).ljust(PACKET_SIZE, b"\x00")


async def next_packet(client: DerpClient) -> frames.ReceivedPacket:
    while True:
        message = await client.recv()
        if isinstance(message, frames.ReceivedPacket):
            return message


async def measure_latency(a: DerpClient, b: DerpClient, count: int, deadline: float) -> list[float]:
    samples = []
    for seq in range(count):
        if time.monotonic() > deadline:
            break
        await a.send(b.public_key, packet(seq))
        received = await next_packet(b)
        _, sent_ns = _STAMP.unpack_from(received.data)
        samples.append((time.perf_counter_ns() - sent_ns) / 1000)
    return samples


async def measure_throughput(a: DerpClient, b: DerpClient, count: int, deadline: float) -> tuple[int, float]:
    received = 0
    progress = asyncio.Event()

    async def receive() -> None:
        nonlocal received
        while received < count:
            await next_packet(b)
            received += 1
            progress.set()

    receiver = asyncio.create_task(receive())
    payload = packet(0)
    started = time.perf_counter()
    sent = 0
    try:
        while sent < count and time.monotonic() < deadline:
            while sent - received >= WINDOW:
                progress.clear()
                await asyncio.wait_for(progress.wait(), timeout=max(0.01, deadline - time.monotonic()))
            burst = min(BATCH, count - sent, WINDOW - (sent - received))
            await a.send_many(b.public_key, [payload] * burst)
            sent += burst
        async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
            while received < sent:
                progress.clear()
                await progress.wait()
    except TimeoutError:
        pass
    finally:
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
    return received, time.perf_counter() - started


async def bench(url: str, packets: int, seconds: float) -> dict[str, float]:
    a = await DerpClient.connect(url)
    b = await DerpClient.connect(url)
    try:
        deadline = time.monotonic() + seconds / 3
        latencies = await measure_latency(a, b, min(packets, 2000), deadline)
        received, elapsed = await measure_throughput(a, b, packets, time.monotonic() + seconds * 2 / 3)
    finally:
        await a.close()
        await b.close()
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "latency_samples": len(latencies),
        "p50_us": quantiles[49],
        "p99_us": quantiles[98],
        "packets": received,
        "pps": received / elapsed,
        "mbps": received * PACKET_SIZE / elapsed / 1e6,
    }


async def wait_for_port(port: int) -> None:
    async with asyncio.timeout(10):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)


def run_one(loop_name: str, packets: int, seconds: float) -> dict[str, float]:
    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    server = ctx.Process(target=serve_forever, args=(loop_name, port), daemon=True)
    server.start()
    try:

        async def main() -> dict[str, float]:
            await wait_for_port(port)
            return await bench(f"http://127.0.0.1:{port}/derp", packets, seconds)

        return run_on(loop_name, main())
    finally:
        server.terminate()
        server.join(5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--packets", type=int, default=50_000, help="packets per throughput run")
    parser.add_argument("--seconds", type=float, default=10.0, help="wall-time cap per event loop")
    parser.add_argument("--loops", default="asyncio,uvloop", help="comma-separated: asyncio, uvloop")
    args = parser.parse_args(argv)
    runners: dict[str, Callable[[], dict[str, float]]] = {}
    for name in args.loops.split(","):
        if name == "uvloop":
            try:
                import uvloop  # noqa: F401
            except ImportError:
                print("uvloop not installed; skipping it")
                continue
        runners[name] = functools.partial(run_one, name, args.packets, args.seconds)
    print(f"DERP relay on loopback, {PACKET_SIZE}-byte packets, window {WINDOW}")
    print(f"{'loop':8} {'packets':>8} {'pkt/s':>10} {'MB/s':>8} {'p50 µs':>8} {'p99 µs':>8}")
    for name, run in runners.items():
        r = run()
        print(
            f"{name:8} {r['packets']:>8.0f} {r['pps']:>10.0f} {r['mbps']:>8.1f} "
            f"{r['p50_us']:>8.0f} {r['p99_us']:>8.0f}"
        )


if __name__ == "__main__":
    main()
