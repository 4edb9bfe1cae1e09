"""Relay throughput and latency between two DERP clients over loopback.

The server runs in its own process (as in production).

* latency: both clients in this process, one 1,200-byte packet in flight at
  a time; the sender stamps it with a monotonic clock the receiver reads, so
  this is one-way latency.
* throughput: the sender and the receiver each run in a process of their
  own, so the figure is the relay's rather than one Python process's.  The
  sender keeps --window packets in flight (the receiver acknowledges each
  read through a pipe); the default, 24, is under both servers' per-client
  queue (32) so neither drops.  --window 0 sends as fast as the server
  reads.  The receiver counts bytes (not frames), which costs it almost
  nothing per packet.  A server that reads faster than it can write drops
  packets (DERP queues are bounded by design, as derper's are); drops are
  shown, and the rate is what was delivered.  The server's CPU time over the run, from
  /proc, is the steadier figure on a shared machine: µs of server CPU per
  delivered packet.  The sender's and the receiver's own CPU per delivered
  packet (their process time while sending and receiving) are shown too: on a
  small machine they share the cores with the server, so they bound the rate
  as much as it does.

The same load is then driven, by the same client code in the same event
loop, against Go's ``derper`` (tailscale's reference relay, built by
tests/refbin.py) listening on 127.0.0.1 with plain HTTP, no STUN, no mesh, no
client verification and no bootstrap DNS, so it never talks to anything
outside loopback; each loop's rows end with our figures as a ratio of
derper's (for latency and CPU per packet, above 1 means we are slower).
derper uses every core it can get (goroutines on threads), we use one, and
on a small machine the clients compete with both for the same cores.  Where
derper cannot be had (no Go toolchain) the reason is printed and only our
rows are shown.

Runs are bounded by packet count and by wall time (each server gets
--seconds per loop).  Usage:

    python benchmarks/derp_throughput.py [--packets 50000] [--seconds 10] [--loops asyncio,uvloop]
                                         [--window 24]
                                         [--no-derper] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp import web

from derp import frames
from derp.client import DerpClient
from derp.http import add_derp_routes
from derp.server import DerpServer
from tests import refbin
from tests.ports import free_port

PACKET_SIZE = 1200
RECV_FRAME_LEN = frames.FRAME_HEADER_LEN + 32 + PACKET_SIZE
WINDOW = 24
"""Default packets in flight: under the per-client queue of both servers (32), so neither drops."""
BATCH = 32
"""SendPacket frames per sender write, with a window (at most a third of it): the sender's CPU per packet is
mostly its writes, and it shares the cores with the relay it measures (32 rather than 8: 1.0-1.2 µs of the
sender's CPU per packet rather than 1.7-1.9)."""
BLAST_BATCH = 64
"""SendPacket frames per sender write, without a window (--window 0)."""
_ACK = struct.Struct("<Q")
IDLE_TIMEOUT = 2.0
"""Seconds without a byte after which the receiver decides the rest were dropped."""
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


def _server_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _receiver_main(
    loop_name: str, url: str, packets: int, seconds: float, pipe: Connection, acks: Connection | None
) -> None:
    """Log in, hand the parent our key, then count relayed bytes until all packets came or time ran out.

    Bytes are counted rather than frames parsed, so the receiver costs almost nothing per packet: every
    RecvPacket frame is the same size, and the only other frame a plain client gets, a keep-alive once a
    minute, is five bytes.  With a window, every read is acknowledged to the sender through ``acks``.
    """

    async def main() -> dict[str, float]:
        client = await DerpClient.connect(url)
        pipe.send(bytes(client.public_key))
        expected = packets * RECV_FRAME_LEN
        received = 0
        first = last = cpu_first = 0.0
        deadline = time.monotonic() + seconds
        try:
            while received < expected:
                timeout = (
                    deadline - time.monotonic()
                    if not received
                    else min(IDLE_TIMEOUT, deadline - time.monotonic())
                )
                try:
                    async with asyncio.timeout(max(0.0, timeout)):
                        chunk = await client.conn.read_some()
                except TimeoutError:
                    break
                if not chunk:
                    break
                last = time.perf_counter()
                if not received:
                    first = last
                    cpu_first = time.process_time()
                received += len(chunk)
                if acks is not None:
                    acks.send_bytes(_ACK.pack(received // RECV_FRAME_LEN))
        finally:
            cpu = time.process_time() - cpu_first if received else 0.0
            await client.close()
        return {"packets": received // RECV_FRAME_LEN, "first": first, "last": last, "cpu_s": cpu}

    pipe.send(run_on(loop_name, main()))


def _sender_main(
    loop_name: str,
    url: str,
    destination: bytes,
    packets: int,
    seconds: float,
    pipe: Connection,
    acks: Connection | None,
    window: int,
) -> None:
    """Log in, wait for the parent's go, then send ``packets``: with a window, never more than that many
    unacknowledged; without, as fast as the server reads them."""

    async def main() -> dict[str, float]:
        client = await DerpClient.connect(url)
        batch = min(BATCH, window // 3) if window else BLAST_BATCH
        burst = frames.encode_send_packet(destination, packet(0)) * batch
        loop = asyncio.get_running_loop()
        acked = 0
        progress = asyncio.Event()

        def on_ack() -> None:
            nonlocal acked
            assert acks is not None
            while acks.poll():
                (acked,) = _ACK.unpack(acks.recv_bytes())
            progress.set()

        if acks is not None:
            loop.add_reader(acks.fileno(), on_ack)
        pipe.send("ready")
        await loop.run_in_executor(None, pipe.recv)
        sent = 0
        cpu_start = time.process_time()
        deadline = time.monotonic() + seconds
        try:
            while sent < packets and time.monotonic() < deadline:
                while window and sent + batch - acked > window:
                    progress.clear()
                    try:
                        async with asyncio.timeout(IDLE_TIMEOUT):
                            await progress.wait()
                    except TimeoutError:
                        acked = sent  # a lost packet must not stall the window: count it gone
                await client.write_raw(burst)
                sent += batch
            # Closing with packets still in our socket buffer would count them as the server's drops.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_TIMEOUT):
                    while window and acked < sent:
                        progress.clear()
                        await progress.wait()
        finally:
            cpu = time.process_time() - cpu_start
            if acks is not None:
                loop.remove_reader(acks.fileno())
            await client.close()
        return {"sent": sent, "cpu_s": cpu}

    pipe.send(run_on(loop_name, main()))


def _expect(pipe: Connection, what: str, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise TimeoutError(f"the benchmark's {what} did not answer within {timeout:.0f} s")
    return pipe.recv()


def measure_throughput(
    loop_name: str, url: str, packets: int, seconds: float, server_pid: int, window: int
) -> dict[str, float]:
    """Receiver and sender each in a process of their own, so what is measured is the relay."""
    ctx = multiprocessing.get_context("spawn")
    receiver_pipe, receiver_end = ctx.Pipe()
    sender_pipe, sender_end = ctx.Pipe()
    ack_in, ack_out = ctx.Pipe(duplex=False) if window else (None, None)
    receiver = ctx.Process(
        target=_receiver_main, args=(loop_name, url, packets, seconds + 20, receiver_end, ack_out)
    )
    receiver.start()
    sender: multiprocessing.process.BaseProcess | None = None
    try:
        destination = _expect(receiver_pipe, "receiver", 30)
        sender = ctx.Process(
            target=_sender_main,
            args=(loop_name, url, destination, packets, seconds, sender_end, ack_in, window),
        )
        sender.start()
        _expect(sender_pipe, "sender", 30)
        cpu_before = _server_cpu_seconds(server_pid)
        sender_pipe.send("go")
        sender_result = _expect(sender_pipe, "sender", seconds + 30)
        sent = sender_result["sent"]
        result = _expect(receiver_pipe, "receiver", 30)
        cpu = _server_cpu_seconds(server_pid) - cpu_before
    finally:
        for process in (sender, receiver):
            if process is not None:
                process.join(5)
                if process.is_alive():
                    process.terminate()
    elapsed = result["last"] - result["first"]
    received = result["packets"]
    return {
        "packets": received,
        "sent": sent,
        "dropped": max(0, sent - received),
        "pps": received / elapsed if elapsed > 0 else 0.0,
        "gbps": received * PACKET_SIZE * 8 / elapsed / 1e9 if elapsed > 0 else 0.0,
        "server_cpu_s": cpu,
        "server_us_per_packet": cpu / received * 1e6 if received else float("nan"),
        "sender_us_per_packet": sender_result["cpu_s"] / received * 1e6 if received else float("nan"),
        "receiver_us_per_packet": result["cpu_s"] / received * 1e6 if received else float("nan"),
    }


async def bench_latency(url: str, packets: int, seconds: float) -> dict[str, float]:
    a = await DerpClient.connect(url)
    b = await DerpClient.connect(url)
    try:
        latencies = await measure_latency(a, b, min(packets, 2000), time.monotonic() + seconds)
    finally:
        await a.close()
        await b.close()
    quantiles = statistics.quantiles(latencies, n=100)
    return {"latency_samples": len(latencies), "p50_us": quantiles[49], "p99_us": quantiles[98]}


async def wait_for_port(port: int) -> None:
    async with asyncio.timeout(10):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)


def run_ours(loop_name: str, packets: int, seconds: float, window: int) -> dict[str, float]:
    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    server = ctx.Process(target=serve_forever, args=(loop_name, port), daemon=True)
    server.start()
    assert server.pid is not None
    try:
        return run_clients(loop_name, port, packets, seconds, server.pid, window)
    finally:
        server.terminate()
        server.join(5)


def run_clients(
    loop_name: str, port: int, packets: int, seconds: float, server_pid: int, window: int
) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/derp"

    async def latency() -> dict[str, float]:
        await wait_for_port(port)
        return await bench_latency(url, packets, seconds / 3)

    result: dict[str, float] = run_on(loop_name, latency())
    result.update(measure_throughput(loop_name, url, packets, seconds * 2 / 3, server_pid, window))
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


def run_derper(derper: Path, loop_name: str, packets: int, seconds: float, window: int) -> dict[str, float]:
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
                return run_clients(loop_name, port, packets, seconds, process.pid, window)
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
        for key in ("pps", "gbps", "p50_us", "p99_us", "server_us_per_packet")
    }


HEADER = (
    f"{'loop':8} {'server':12} {'packets':>8} {'dropped':>8} {'pkt/s':>10} {'Gbit/s':>7} "
    f"{'CPU s':>6} {'µs/pkt':>7} {'p50 µs':>8} {'p99 µs':>8} {'snd µs':>7} {'rcv µs':>7}"
)


def row(loop: str, server: str, r: dict[str, float]) -> str:
    return (
        f"{loop:8} {server:12} {r['packets']:>8.0f} {r['dropped']:>8.0f} {r['pps']:>10.0f} {r['gbps']:>7.3f} "
        f"{r['server_cpu_s']:>6.2f} {r['server_us_per_packet']:>7.2f} {r['p50_us']:>8.0f} {r['p99_us']:>8.0f}"
        f" {r['sender_us_per_packet']:>7.2f} {r['receiver_us_per_packet']:>7.2f}"
    )


def ratio_row(loop: str, r: dict[str, float]) -> str:
    return (
        f"{loop:8} {'ratio':12} {'':>8} {'':>8} {r['pps']:>9.2f}x {r['gbps']:>6.2f}x "
        f"{'':>6} {r['server_us_per_packet']:>6.2f}x {r['p50_us']:>7.2f}x {r['p99_us']:>7.2f}x"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--packets", type=int, default=50_000, help="packets per throughput run")
    parser.add_argument("--seconds", type=float, default=10.0, help="wall-time cap per server and event loop")
    parser.add_argument("--loops", default="asyncio,uvloop", help="comma-separated: asyncio, uvloop")
    parser.add_argument(
        "--window",
        type=int,
        default=WINDOW,
        help="packets in flight (acknowledged by the receiver); 0: send as fast as the server reads",
    )
    parser.add_argument("--no-derper", action="store_true", help="do not run Go's derper for comparison")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON object, last")
    args = parser.parse_args(argv)
    if args.packets < 2 or args.seconds <= 0 or not (args.window == 0 or args.window >= 3):
        parser.error("--packets must be at least 2, --seconds positive and --window 0 or at least 3")
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
    print(
        f"DERP relay on loopback, {PACKET_SIZE}-byte packets, window {args.window or 'none'}; sender and "
        "receiver in processes of their own; CPU s and µs/pkt are the server's, snd and rcv µs the "
        "sender's and the receiver's CPU per packet"
    )
    if derper is None:
        print(f"derper not compared: {derper_missing}")
    print(HEADER)
    results: list[dict[str, Any]] = []
    for name in loops:
        ours = run_ours(name, args.packets, args.seconds, args.window)
        print(row(name, "pyheadscale", ours), flush=True)
        result: dict[str, Any] = {"loop": name, "pyheadscale": ours}
        if derper is not None:
            theirs = run_derper(derper, name, args.packets, args.seconds, args.window)
            print(row(name, "derper", theirs), flush=True)
            result["derper"] = theirs
            result["ratio"] = ratios(ours, theirs)
            print(ratio_row(name, result["ratio"]), flush=True)
        results.append(result)
    if args.json:
        report = {
            "packet_size": PACKET_SIZE,
            "window": args.window,
            "derper": str(derper) if derper is not None else None,
            "derper_missing": derper_missing if derper is None else None,
            "runs": results,
        }
        print(json.dumps(report))


if __name__ == "__main__":
    main()
