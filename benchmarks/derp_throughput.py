"""Relay throughput and latency between two DERP clients over loopback.

The server runs in its own process (as in production, so clients and server
do not share a CPU's event loop); both clients run in this process.

* latency: one 1,200-byte packet in flight at a time; the sender stamps it
  with a monotonic clock the receiver reads, so this is one-way latency.
* throughput: the sender keeps a window of packets in flight, smaller than
  the server's per-client queue, so the figure is relay capacity rather than
  how fast the server can drop packets.

The same load is then driven, from the same event loop, against Go's
``derper`` (tailscale's reference relay, built by tests/refbin.py) listening
on 127.0.0.1 with plain HTTP, no STUN, no mesh, no client verification and
no bootstrap DNS, so it never talks to anything outside loopback; each loop's
rows end with our figures as a ratio of derper's (for latency, above 1 means
we are slower).  Both clients share one Python process, which can be the
bottleneck for derper's figure, so the throughput ratio is an upper bound on
how close we are.  Where derper cannot be had (no Go toolchain) the reason
is printed and only our rows are shown.

Runs are bounded by packet count and by wall time (each server gets
--seconds per loop).  Usage:

    python benchmarks/derp_throughput.py [--packets 50000] [--seconds 10] [--loops asyncio,uvloop]
                                         [--no-derper] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp import web

from derp import frames
from derp.client import DerpClient
from derp.http import add_derp_routes
from derp.server import DEFAULT_SEND_QUEUE_DEPTH, DerpServer
from tests import refbin
from tests.ports import free_port

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
        "gbps": received * PACKET_SIZE * 8 / elapsed / 1e9,
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


def run_ours(loop_name: str, packets: int, seconds: float) -> dict[str, float]:
    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    server = ctx.Process(target=serve_forever, args=(loop_name, port), daemon=True)
    server.start()
    try:
        return run_clients(loop_name, port, packets, seconds)
    finally:
        server.terminate()
        server.join(5)


def run_clients(loop_name: str, port: int, packets: int, seconds: float) -> dict[str, float]:
    async def main() -> dict[str, float]:
        await wait_for_port(port)
        return await bench(f"http://127.0.0.1:{port}/derp", packets, seconds)

    result: dict[str, float] = run_on(loop_name, main())
    return result


def derper_command(derper: Path, port: int, state_dir: Path) -> list[str]:
    """derper serving plain HTTP on loopback only: every flag that could reach out is off or left unset."""
    return [
        str(derper),
        f"-a=127.0.0.1:{port}",  # not :443 and certmode not manual: plain HTTP, no ACME
        "-http-port=-1",
        "-stun=false",
        f"-c={state_dir / 'derper.key'}",  # its node key, written on first start
        "-home=blank",
        # Left at their defaults (empty/false): -verify-clients, -verify-client-url, -mesh-with,
        # -bootstrap-dns-names, -unpublished-bootstrap-dns-names, -secrets-url.
    ]


def run_derper(derper: Path, loop_name: str, packets: int, seconds: float) -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="derper-bench-") as state_dir:
        log = Path(state_dir) / "derper.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                derper_command(derper, port, Path(state_dir)),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=state_dir,
            )
        try:
            try:
                return run_clients(loop_name, port, packets, seconds)
            except (TimeoutError, OSError) as exc:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"derper run failed ({exc!r}); its log ends:\n{tail}") from exc
        finally:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def find_derper() -> tuple[Path | None, str]:
    """derper's path, or None and the reason it cannot be had."""
    try:
        return refbin.binary("derper"), ""
    except refbin.Unavailable as exc:
        return None, str(exc)


def ratios(ours: dict[str, float], theirs: dict[str, float]) -> dict[str, float]:
    """Our figure divided by derper's, for throughput and latency (latency: above 1 means we are slower)."""
    return {
        key: ours[key] / theirs[key] if theirs[key] else float("nan")
        for key in ("pps", "gbps", "p50_us", "p99_us")
    }


def row(loop: str, server: str, r: dict[str, float]) -> str:
    return (
        f"{loop:8} {server:12} {r['packets']:>8.0f} {r['pps']:>10.0f} {r['gbps']:>7.3f} "
        f"{r['p50_us']:>8.0f} {r['p99_us']:>8.0f}"
    )


def ratio_row(loop: str, r: dict[str, float]) -> str:
    return (
        f"{loop:8} {'ratio':12} {'':>8} {r['pps']:>9.2f}x {r['gbps']:>6.2f}x "
        f"{r['p50_us']:>7.2f}x {r['p99_us']:>7.2f}x"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--packets", type=int, default=50_000, help="packets per throughput run")
    parser.add_argument("--seconds", type=float, default=10.0, help="wall-time cap per server and event loop")
    parser.add_argument("--loops", default="asyncio,uvloop", help="comma-separated: asyncio, uvloop")
    parser.add_argument("--no-derper", action="store_true", help="do not run Go's derper for comparison")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON object, last")
    args = parser.parse_args(argv)
    if args.packets < 2 or args.seconds <= 0:
        parser.error("--packets must be at least 2 and --seconds positive")
    loops = []
    for name in args.loops.split(","):
        if name not in ("asyncio", "uvloop"):
            parser.error(f"unknown event loop {name!r} in --loops (known: asyncio, uvloop)")
        if name == "uvloop":
            try:
                import uvloop  # noqa: F401
            except ImportError:
                print("uvloop not installed; skipping it")
                continue
        loops.append(name)
    derper: Path | None = None
    derper_missing = "not requested (--no-derper)"
    if not args.no_derper:
        derper, derper_missing = find_derper()
    print(f"DERP relay on loopback, {PACKET_SIZE}-byte packets, window {WINDOW}")
    if derper is None:
        print(f"derper not compared: {derper_missing}")
    print(f"{'loop':8} {'server':12} {'packets':>8} {'pkt/s':>10} {'Gbit/s':>7} {'p50 µs':>8} {'p99 µs':>8}")
    results: list[dict[str, Any]] = []
    for name in loops:
        ours = run_ours(name, args.packets, args.seconds)
        print(row(name, "pyheadscale", ours), flush=True)
        result: dict[str, Any] = {"loop": name, "pyheadscale": ours}
        if derper is not None:
            theirs = run_derper(derper, name, args.packets, args.seconds)
            print(row(name, "derper", theirs), flush=True)
            result["derper"] = theirs
            result["ratio"] = ratios(ours, theirs)
            print(ratio_row(name, result["ratio"]), flush=True)
        results.append(result)
    if args.json:
        report = {
            "packet_size": PACKET_SIZE,
            "window": WINDOW,
            "derper": str(derper) if derper is not None else None,
            "derper_missing": derper_missing if derper is None else None,
            "runs": results,
        }
        print(json.dumps(report))


if __name__ == "__main__":
    main()
