"""Registration throughput: server CPU per registration and registrations/s, two trees side by side.

Each round starts a fresh pyheadscale server (`benchmarks/control_targets.Pyheadscale`) on a loopback port,
creates one user and one reusable preauth key through its CLI, and has `--workers` client processes
(`benchmarks/control_nodes.py`) register `--nodes` unique nodes, `--concurrency` in flight each: every node is
a new TCP connection with the TS2021 upgrade, the Noise handshake, HTTP/2 and a register request, as a
tailscaled joining with a preauth key does. The primary figure is the server process's CPU time (user + system
from /proc) divided by the nodes registered; the client processes' CPU per registration beside it says what
the simulation itself costs the shared machine (server and clients together must fit its cores at the rate
sought); the wall-clock rate depends on the machine's load.

`--tree NAME=PATH` (repeatable) runs the server from another checkout (its PYTHONPATH), so a before/after pair
runs back to back in one invocation, rounds interleaved; the clients always come from this tree. `--py-spy
PATH` samples the server of the first round of each tree with `py-spy --gil` into PATH-<name>.txt (raw,
collapsed stacks). Usage:

    python benchmarks/control_register.py [--nodes 1000] [--rounds 3] [--tree before=/tmp/base --tree after=.]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.control_nodes import use_fast_json
from benchmarks.control_scale import Workers
from benchmarks.control_targets import Pyheadscale, layout

PHASE_TIMEOUT = 600.0


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process `pid`, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


class TreeServer(Pyheadscale):
    """pyheadscale run from the checkout at `tree`."""

    def __init__(self, workdir: Path, tree: Path, nodes: int) -> None:
        super().__init__(workdir, layout("allow-all", nodes))
        # `python -m` puts the working directory ahead of PYTHONPATH: both must name the tree.
        self.tree = tree
        self.env = os.environ | {"PYTHONPATH": str(tree)}

    def start(self) -> None:
        log = (self.workdir / "server.log").open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, env=self.env, cwd=self.tree)

    def cli(self, *args: str) -> Any:
        out = subprocess.run(
            [*self.cli_command(), "-o", "json", *args],
            check=True,
            capture_output=True,
            timeout=60,
            env=self.env,
            cwd=self.tree,
        )
        return json.loads(out.stdout)


def start_profiler(out: Path, pid: int) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` while it holds the GIL, into `out` as collapsed stacks, until SIGINT."""
    command = ["py-spy", "record", "--gil", "--pid", str(pid), "--format", "raw", "--rate", "200"]
    return subprocess.Popen([*command, "--output", str(out)])


async def one_round(tree: Path, args: argparse.Namespace, profile: Path | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="pyhs-reg-") as tmp:
        server = TreeServer(Path(tmp), tree, args.nodes)
        server.start()
        workers = None
        profiler = None
        try:
            await server.wait_ready()
            key = server.auth_keys()["alice"]
            workers = Workers(server.url, args.workers, args.concurrency, False)
            specs: list[list[tuple[int, str, str]]] = [[] for _ in range(args.workers)]
            for i in range(args.nodes):
                specs[i % args.workers].append((i, f"node-{i}", key))
            # Warm up: the first few registrations pay imports and caches once per process.
            warm = [[(args.nodes + w, f"warm-{w}", key)] for w in range(args.workers)]
            await workers.call([("register", s) for s in warm], PHASE_TIMEOUT)
            if profile is not None:
                profiler = start_profiler(profile, server.pid)
                await asyncio.sleep(1.0)
            user0, system0 = cpu_times(server.pid)
            clients0 = workers.cpu_seconds()
            started = time.monotonic()
            replies = await workers.call([("register", s) for s in specs], PHASE_TIMEOUT)
            wall = time.monotonic() - started
            user, system = cpu_times(server.pid)
            user, system = user - user0, system - system0
            clients = workers.cpu_seconds() - clients0
            failed = sum(r["failed"] for r in replies)
            if failed:
                errors = [e for r in replies for e in r["errors"]]
                raise RuntimeError(f"{failed} registrations failed, e.g. {errors[:3]}")
            elapsed = max(r["elapsed"] for r in replies)
            return {
                "cpu_ms": 1000 * (user + system) / args.nodes,
                "user_ms": 1000 * user / args.nodes,
                "system_ms": 1000 * system / args.nodes,
                "client_ms": 1000 * clients / args.nodes,
                "rate": args.nodes / elapsed,
                "wall_s": wall,
            }
        finally:
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(timeout=60)
            server.stop()
            if workers is not None:
                workers.stop()


def table(results: dict[str, list[dict[str, float]]], nodes: int) -> str:
    lines = [
        f"| tree (N={nodes}) | server CPU per registration (ms) | of it user / system "
        "| clients' CPU per registration (ms) | registrations/s | rounds |",
        "|---|---|---|---|---|---|",
    ]
    for name, rounds in results.items():
        cpu = [r["cpu_ms"] for r in rounds]
        rate = [r["rate"] for r in rounds]
        user = statistics.median(r["user_ms"] for r in rounds)
        system = statistics.median(r["system_ms"] for r in rounds)
        clients = [r["client_ms"] for r in rounds]
        lines.append(
            f"| {name} | {statistics.median(cpu):.2f} ({min(cpu):.2f}-{max(cpu):.2f}) "
            f"| {user:.2f} / {system:.2f} "
            f"| {statistics.median(clients):.2f} ({min(clients):.2f}-{max(clients):.2f}) "
            f"| {statistics.median(rate):.0f} ({min(rate):.0f}-{max(rate):.0f}) "
            f"| {len(rounds)} |"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in args.trees}
    for round_no in range(args.rounds):
        for name, tree in args.trees:
            profile = Path(f"{args.py_spy}-{name}.txt") if args.py_spy and round_no == 0 else None
            result = await one_round(tree, args, profile)
            results[name].append(result)
            print(
                f"round {round_no + 1} {name}: {result['cpu_ms']:.2f} ms CPU/registration "
                f"({result['user_ms']:.2f} user, {result['system_ms']:.2f} system), "
                f"clients {result['client_ms']:.2f} ms, "
                f"{result['rate']:.0f}/s",
                flush=True,
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000, help="registrations per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument("--concurrency", type=int, default=64, help="registrations in flight per worker")
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        help="NAME=PATH: a checkout to run the server from (repeatable)",
    )
    parser.add_argument("--py-spy", help="profile each tree's first round into PATH-<name>.txt")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    trees = []
    for spec in args.tree or [f"this={Path(__file__).resolve().parents[1]}"]:
        name, sep, path = spec.partition("=")
        if not sep or not Path(path, "pyheadscale").is_dir():
            parser.error(f"--tree {spec!r}: want NAME=PATH of a checkout with pyheadscale/ in it")
        trees.append((name, Path(path).resolve()))
    args.trees = trees
    use_fast_json()
    results = asyncio.run(main_async(args))
    print(table(results, args.nodes))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
