"""DERP throughput while the control plane is busy: relay embedded in pyheadscale, or in its own process.

One pyheadscale server per mode, on loopback, allow-all:

* embedded: ``derp.server.enabled`` (Headscale's embedded relay): /derp on the control server's port, served
  by the same process and event loop as registration and map streams;
* separate: the control server with ``derp.server.enabled: false``, and the relay as ``python -m derp`` in a
  process of its own (its own port, the DERP map pointing there; STUN would run there too).

Each mode measures the relay (benchmarks/derp_throughput.py's sender and receiver, each in a process of its
own, 1,200-byte packets) twice: quiet, then while simulated nodes (benchmarks/control_nodes.py workers, real
Noise + HTTP/2) register in a loop for as long as the relay is measured.  Figures: delivered packets/s and
Gbit/s, the relay process's CPU µs per packet (embedded and busy, that process also does the registrations,
so the figure is the whole server's CPU over the packets), and the registrations/s managed meanwhile.
On a shared machine the busy figure depends on how many cores the run gets: `uptime` before it.  Usage:

    python benchmarks/derp_cores.py [--seconds 10] [--window 96] [--workers 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.control_scale import Workers
from benchmarks.control_targets import Pyheadscale, cpu_seconds, layout
from benchmarks.derp_throughput import measure_throughput, wait_for_port
from tests.ports import free_port

MODES = ("embedded", "separate")
REGISTER_BATCH = 100
"""Nodes each worker registers per command; commands repeat until the relay's run is over."""


class Relay:
    """Where the relay of one mode listens, and which process serves it."""

    def __init__(self, url: str, pid: int, process: subprocess.Popen[bytes] | None) -> None:
        self.url = url
        self.pid = pid
        self.process = process

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def configure(server: Pyheadscale, mode: str) -> None:
    """Turn the benchmark target's config (DERP off) into the mode's."""
    config = json.loads(server.config_path.read_text())
    if mode == "embedded":
        # Our DERP clients are not nodes of the tailnet: verification would refuse them.
        config["derp"]["server"] = {
            "enabled": True,
            "verify_clients": False,
            "stun_listen_addr": f"127.0.0.1:{free_port()}",
            "private_key_path": str(server.workdir / "derp.key"),
        }
    server.config_path.write_text(json.dumps(config))


def start_relay(server: Pyheadscale, mode: str) -> Relay:
    """The embedded relay is the control server's; the separate one is started here as ``python -m derp``."""
    if mode == "embedded":
        return Relay(f"{server.url}/derp", server.pid, None)
    port = free_port()
    log = (server.workdir / "derper.log").open("ab")
    command = [sys.executable, "-m", "derp", "-a", f"127.0.0.1:{port}", "--http-port", "-1", "--no-stun"]
    command += ["-c", str(server.workdir / "derp.json"), "--uvloop"]
    process = subprocess.Popen(command, stdout=log, stderr=log)
    return Relay(f"http://127.0.0.1:{port}/derp", process.pid, process)


async def registration_load(workers: Workers, auth_key: str, stop: asyncio.Event) -> dict[str, float]:
    """Register fresh nodes, REGISTER_BATCH per worker at a time, until ``stop``; returns the rate."""
    registered = 0
    started = time.monotonic()
    next_index = 0
    while not stop.is_set():
        specs = []
        for _ in workers.pipes:
            batch = [(i, f"load-{i}", auth_key) for i in range(next_index, next_index + REGISTER_BATCH)]
            next_index += REGISTER_BATCH
            specs.append(batch)
        replies = await workers.call([("register", s) for s in specs])
        registered += sum(REGISTER_BATCH - r["failed"] for r in replies)
    elapsed = time.monotonic() - started
    return {"registered": registered, "register_rate": registered / elapsed}


async def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"derp-cores-{mode}-") as tmp:
        server = Pyheadscale(Path(tmp), layout("allow-all", 0))
        configure(server, mode)
        server.start()
        relay: Relay | None = None
        workers: Workers | None = None
        try:
            await server.wait_ready()
            auth_key = server.auth_keys()[server.layout.probe_owner]
            relay = start_relay(server, mode)
            await wait_for_port(int(relay.url.rsplit(":", 1)[1].split("/")[0]))
            result: dict[str, Any] = {"mode": mode}
            result["quiet"] = await asyncio.to_thread(
                measure_throughput, "uvloop", relay.url, 10**9, args.seconds, relay.pid, args.window
            )
            workers = Workers(server.url, args.workers, args.concurrency, False)
            stop = asyncio.Event()
            control_cpu0 = cpu_seconds(server.pid)
            load = asyncio.create_task(registration_load(workers, auth_key, stop))
            await asyncio.sleep(2)  # let the burst reach its stride before the relay is measured
            busy = await asyncio.to_thread(
                measure_throughput, "uvloop", relay.url, 10**9, args.seconds, relay.pid, args.window
            )
            stop.set()
            busy.update(await load)
            busy["control_cpu_s"] = cpu_seconds(server.pid) - control_cpu0
            result["busy"] = busy
            return result
        finally:
            if workers is not None:
                workers.stop()
            if relay is not None:
                relay.stop()
            server.stop()


def row(mode: str, phase: str, r: dict[str, Any]) -> str:
    rate = f"{r['register_rate']:>8.0f}" if "register_rate" in r else f"{'-':>8}"
    return (
        f"{mode:9} {phase:6} {r['pps']:>9.0f} {r['gbps']:>7.3f} {r['dropped']:>8.0f} "
        f"{r['server_us_per_packet']:>8.2f} {rate}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="relay measurement per phase")
    parser.add_argument("--window", type=int, default=96, help="packets in flight (see derp_throughput.py)")
    parser.add_argument("--workers", type=int, default=2, help="node-simulating processes for the load")
    parser.add_argument("--concurrency", type=int, default=50, help="registrations in flight per worker")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: embedded, separate")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON object, last")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    unknown = set(modes) - set(MODES)
    if unknown or args.seconds <= 0 or args.workers < 1:
        parser.error(f"--modes from {MODES} (not {sorted(unknown)}), --seconds positive, --workers >= 1")
    print(f"DERP relay, 1200-byte packets, window {args.window}, while {args.workers} workers register nodes")
    print(f"{'mode':9} {'phase':6} {'pkt/s':>9} {'Gbit/s':>7} {'dropped':>8} {'µs/pkt':>8} {'reg/s':>8}")
    results = []
    for mode in modes:
        result = asyncio.run(run_mode(mode, args))
        for phase in ("quiet", "busy"):
            print(row(mode, phase, result[phase]), flush=True)
        results.append(result)
    if args.json:
        print(json.dumps({"window": args.window, "workers": args.workers, "runs": results}))


if __name__ == "__main__":
    main()
