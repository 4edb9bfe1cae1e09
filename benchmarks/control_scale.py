"""Control-plane scale: registration, full maps, change propagation, idle cost and a restart storm.

For each size N and each target (pyheadscale, and with `--target headscale` Headscale v0.29.2 in the same
run), the benchmark starts a fresh server in its own process on a free loopback port, creates users and
reusable preauth keys through the server's own CLI, and simulates N nodes from worker processes
(`benchmarks/control_nodes.py`), each node one TCP connection with our TS2021 ControlClient (real Noise,
HTTP/2 and zstd, the same clients for both targets). Then it measures:

* registration rate: N nodes connecting (Noise) and registering, as nodes/s;
* time to first full map: from a node's streaming map request to its first MapResponse, all N opening at once;
* join propagation: a probe node registers; how long until every connected node that may see it has it in a
  PeersChanged (per join: the time to the last recipient; also every recipient's latency pooled);
* endpoint propagation: a probe reports a new endpoint; how long until its peers get the PeersChangedPatch;
* idle: server CPU (% of one core) over `--idle-seconds` with all N streams open and nothing changing, and
  memory per idle stream (RSS with N streams open minus RSS with N nodes registered and none connected);
* restart storm: the server is stopped (SIGTERM) and started again on the same database; once it answers,
  every node reconnects at once (new Noise connection, new map stream); the figure is the time until the
  last stream holds its full map, checked to hold every peer the layout says it should, with the kernel's
  listen-queue overflows meanwhile (counted for the whole network namespace);
* server memory, and bytes on the wire per change (pyheadscale's own /metrics; Headscale has no such counter).

`--policy roles` registers four users and tagged servers under a policy with groups and tags; `--policy
segmented` puts nodes in segments of 100 (one user each, one rule each), so each node sees ~100 peers.
Everything runs on 127.0.0.1 and is bounded: each phase has a timeout, each size a deadline, and the run stops
by itself. `--py-spy PATH` samples the server with py-spy during the connect phase, the idle window and the
storm (collapsed stacks). Every figure is
printed as a table; `--json FILE` writes them too. The machine's load shows in every figure: run it alone.
Usage:

    python benchmarks/control_scale.py [--sizes 200,1000] [--target pyheadscale,headscale]
        [--policy allow-all|roles|segmented] [--joins 5] [--idle-seconds 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.control_nodes import MOVED_ENDPOINT_PREFIX, PROBE_PREFIX, use_fast_json, worker_main
from benchmarks.control_targets import (
    Headscale,
    Layout,
    Pyheadscale,
    Target,
    cpu_seconds,
    layout,
    listen_overflows,
    rss_bytes,
)
from pyheadscale.client.control import ControlClient
from pyheadscale.tailkey import MachinePrivate, MachinePublic, NodePrivate

PHASE_TIMEOUT = 300.0
SETTLE_SECONDS = 0.5


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999) - 1))
    return ordered[rank]


class Workers:
    """The client processes, each behind a pipe; sightings from all of them land in `seen`."""

    def __init__(
        self, url: str, count: int, concurrency: int, churn: bool, phase_timeout: float = PHASE_TIMEOUT
    ) -> None:
        self.phase_timeout = phase_timeout
        context = multiprocessing.get_context("spawn")
        self.loop = asyncio.get_running_loop()
        self.seen: dict[str, list[float]] = defaultdict(list)
        self.pipes = []
        self.procs = []
        self.replies: list[asyncio.Queue[Any]] = []
        for _ in range(count):
            parent, child = context.Pipe()
            proc = context.Process(target=worker_main, args=(url, child, concurrency, churn), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)
            queue: asyncio.Queue[Any] = asyncio.Queue()
            self.replies.append(queue)
            threading.Thread(target=self._read, args=(parent, queue), daemon=True).start()

    def _read(self, pipe: Any, queue: asyncio.Queue[Any]) -> None:
        while True:
            try:
                message = pipe.recv()
            except (EOFError, OSError):
                return
            if message[0] == "seen":
                self.loop.call_soon_threadsafe(self._record, message[1])
            else:
                self.loop.call_soon_threadsafe(queue.put_nowait, message[1])

    def _record(self, batch: list[tuple[str, float]]) -> None:
        for marker, when in batch:
            self.seen[marker].append(when)

    async def call(self, per_worker: list[tuple[Any, ...]], within: float | None = None) -> list[Any]:
        within = self.phase_timeout if within is None else within
        for pipe, command in zip(self.pipes, per_worker, strict=True):
            pipe.send(command)
        try:
            return list(await asyncio.wait_for(asyncio.gather(*(q.get() for q in self.replies)), within))
        except TimeoutError:
            phase = per_worker[0][0]
            raise RuntimeError(f"{phase}: the workers did not finish within {within:.0f} s") from None

    async def wait_seen(self, marker: str, expected: int, within: float) -> list[float]:
        """The receive times of `marker` once `expected` nodes saw it, or whatever arrived within `within`."""
        deadline = time.monotonic() + within
        while len(self.seen[marker]) < expected and time.monotonic() < deadline:  # noqa: ASYNC110 - polled
            await asyncio.sleep(0.005)
        return list(self.seen[marker])

    def cpu_seconds(self) -> float:
        """CPU the client processes have used so far: whether the simulator, not the server, was the limit."""
        return sum(cpu_seconds(proc.pid) for proc in self.procs if proc.pid is not None)

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(Exception):
                pipe.send(("stop",))
        for proc in self.procs:
            proc.join(timeout=15)
            if proc.is_alive():
                proc.kill()


async def settle(server: Target, limit: float = 60.0) -> None:
    """Wait until the server has stopped sending deltas from the last change.

    pyheadscale counts its map messages; for a server that does not, quiet is under 5% of a core for
    SETTLE_SECONDS.
    """
    deadline = time.monotonic() + limit
    last = await server.map_metrics()
    cpu = cpu_seconds(server.pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(SETTLE_SECONDS)
        now, now_cpu = await server.map_metrics(), cpu_seconds(server.pid)
        if (
            (now[1] == last[1])
            if now is not None and last is not None
            else now_cpu - cpu < 0.05 * SETTLE_SECONDS
        ):
            return
        last, cpu = now, now_cpu


@contextlib.contextmanager
def profiled(args: argparse.Namespace, server: Target, n: int, phase: str) -> Iterator[None]:
    """With `--py-spy PATH`: py-spy samples pyheadscale during `phase` into PATH-<target>-<N>-<phase>."""
    if not args.py_spy or server.name != "pyheadscale":  # py-spy reads Python processes only
        yield
        return
    out = args.py_spy.with_name(f"{args.py_spy.stem}-{server.name}-{n}-{phase}{args.py_spy.suffix}")
    command = ["py-spy", "record", "--pid", str(server.pid), "--format", "raw", "--rate", "50"]
    profiler = subprocess.Popen([*command, "--output", str(out)])
    try:
        yield
    finally:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(timeout=60)


def make_target(name: str, workdir: Path, tailnet: Layout, keepalive: float | None = None) -> Target:
    if name == "headscale":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.refbin import binary

        return Headscale(workdir, tailnet, binary("headscale"))
    return Pyheadscale(workdir, tailnet, keepalive)


async def run_size(n: int, target: str, args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Measure one size against one server into `result`, which keeps what was measured if it is cut off."""
    with tempfile.TemporaryDirectory(prefix="pyhs-bench-") as tmp:
        server = make_target(target, Path(tmp), layout(args.policy, n), args.keepalive)
        server.start()
        spawned: list[Workers] = []
        probes: list[ControlClient] = []
        try:
            await server.wait_ready()
            await _measure(n, args, server, probes, spawned, result)
        finally:
            for probe in probes:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(probe.close(), 5)
            server.stop()
            for workers in spawned:
                workers.stop()


async def _measure(
    n: int,
    args: argparse.Namespace,
    server: Target,
    probes: list[ControlClient],
    spawned: list[Workers],
    result: dict[str, Any],
) -> None:
    """One size's figures, into `result`; `probes` and `spawned` collect what the caller must close."""
    tailnet = server.layout
    auth = server.auth_keys()

    workers = Workers(server.url, args.workers, args.concurrency, args.churn, args.phase_timeout)
    spawned.append(workers)
    specs: list[list[tuple[int, str, str]]] = [[] for _ in range(args.workers)]
    for i in range(n):
        specs[i % args.workers].append((i, f"node-{i}", auth[tailnet.owner(i)]))

    cpu0 = cpu_seconds(server.pid)
    started = time.monotonic()
    replies = await workers.call([("register", s) for s in specs])
    _check(replies, "register")
    elapsed = max(r["elapsed"] for r in replies)  # from the workers' start, not their processes' spawn
    result["register_rate"] = n / elapsed
    result["register_cpu_s"] = cpu_seconds(server.pid) - cpu0
    await settle(server)
    registered_rss = rss_bytes(server.pid)

    cpu0, sent0, clients0 = cpu_seconds(server.pid), await server.map_metrics(), workers.cpu_seconds()
    started = time.monotonic()
    with profiled(args, server, n, "connect"):
        replies = await workers.call([("connect",)] * args.workers)
    _check(replies, "connect")
    latencies = [x for r in replies for x in r["latencies"]]
    result["connect_all_s"] = time.monotonic() - started
    result["first_map_p50"] = percentile(latencies, 0.5)
    result["first_map_p99"] = percentile(latencies, 0.99)
    result["connect_short_maps"] = _short_maps(replies, tailnet, 0)
    await settle(server)
    result["connect_cpu_s"] = cpu_seconds(server.pid) - cpu0
    result["connect_clients_cpu_s"] = workers.cpu_seconds() - clients0
    _sent(result, "connect", sent0, await server.map_metrics())
    rss = rss_bytes(server.pid)
    result["rss_mb"] = rss / 2**20
    result["stream_kb"] = (rss - registered_rss) / n / 1024

    await _changes(n, args, server, auth, workers, probes, result)

    if args.idle_seconds > 0:
        await settle(server)
        cpu0, started, kept0 = cpu_seconds(server.pid), time.monotonic(), await server.keepalives_sent()
        with profiled(args, server, n, "idle"):
            await asyncio.sleep(args.idle_seconds)
        elapsed, kept, cpu = (
            time.monotonic() - started,
            await server.keepalives_sent(),
            cpu_seconds(server.pid),
        )
        result["idle_cpu_pct"] = 100 * (cpu - cpu0) / elapsed
        if kept is not None and kept0 is not None:
            # A window shorter than the keep-alive interval right after the streams opened may hold none.
            result["idle_keepalives_per_s"] = (kept - kept0) / elapsed
            if kept > kept0:
                result["idle_us_per_keepalive"] = 1e6 * (cpu - cpu0) / (kept - kept0)
    result["streams_alive"] = sum(await workers.call([("ping",)] * args.workers))

    if args.storm:
        await _storm(args, server, workers, len(probes), result)


async def _changes(
    n: int,
    args: argparse.Namespace,
    server: Target,
    auth: dict[str, str],
    workers: Workers,
    probes: list[ControlClient],
    result: dict[str, Any],
) -> None:
    """Probe joins and endpoint moves, and how long each takes to reach everyone who may see it."""
    expected = sum(1 for i in range(n) if server.layout.sees_probe(i))
    result["probe_viewers"] = expected
    server_public = MachinePublic.from_text(
        json.loads(await server.http_get(server.port, "/key?v=130"))["publicKey"]
    )
    join_all: list[float] = []
    join_each: list[float] = []
    move_all: list[float] = []
    move_each: list[float] = []
    counted: dict[str, list[tuple[float, float]]] = {"join": [], "move": []}
    cpu0 = cpu_seconds(server.pid)
    for j in range(args.joins):
        name = f"{PROBE_PREFIX}{j}"
        client = ControlClient(server.url, MachinePrivate.generate())
        probes.append(client)
        await client.connect(server_public)
        node_key = NodePrivate.generate()
        before = await server.map_metrics()
        sent = time.monotonic()
        await client.register(node_key, auth_key=auth[server.layout.probe_owner], hostname=name)
        seen = await workers.wait_seen(name, expected, args.propagation_timeout)
        _record(seen, sent, expected, join_all, join_each, name)
        await settle(server)
        _count(counted["join"], before, await server.map_metrics())

        marker = f"{MOVED_ENDPOINT_PREFIX}{j + 1}:41641"
        before = await server.map_metrics()
        sent = time.monotonic()
        status, body = await client.request(
            "POST",
            "/machine/map",
            {
                "Version": client.capver,
                "NodeKey": node_key.public().text,
                "DiscoKey": "discokey:" + "22" * 32,
                "Stream": False,
                "OmitPeers": True,
                "Endpoints": [marker],
            },
        )
        if status != 200:
            raise RuntimeError(f"endpoint update answered {status}: {body[:200]!r}")
        seen = await workers.wait_seen(marker, expected, args.propagation_timeout)
        _record(seen, sent, expected, move_all, move_each, marker)
        await settle(server)
        _count(counted["move"], before, await server.map_metrics())
    result["changes_cpu_s"] = cpu_seconds(server.pid) - cpu0
    result["join_all_p50"], result["join_all_p99"] = percentile(join_all, 0.5), percentile(join_all, 0.99)
    result["join_each_p50"], result["join_each_p99"] = percentile(join_each, 0.5), percentile(join_each, 0.99)
    result["move_all_p50"], result["move_all_p99"] = percentile(move_all, 0.5), percentile(move_all, 0.99)
    result["move_each_p50"], result["move_each_p99"] = percentile(move_each, 0.5), percentile(move_each, 0.99)
    for kind, pairs in counted.items():
        result[f"{kind}_bytes"] = sum(b for b, _ in pairs) / len(pairs) if pairs else float("nan")
        result[f"{kind}_msgs"] = sum(m for _, m in pairs) / len(pairs) if pairs else float("nan")


async def _storm(
    args: argparse.Namespace, server: Target, workers: Workers, probes: int, result: dict[str, Any]
) -> None:
    """Restart the server on the same database; every node reconnects at once."""
    server.stop()
    started = time.monotonic()
    server.start()
    await server.wait_ready()
    result["restart_s"] = time.monotonic() - started
    with profiled(args, server, result["nodes"], "storm"):
        cpu0, overflows, sent0 = cpu_seconds(server.pid), listen_overflows(), await server.map_metrics()
        clients0 = workers.cpu_seconds()
        started = time.monotonic()
        replies = await workers.call([("storm", args.storm_concurrency)] * args.workers)
        result["storm_listen_overflows"] = listen_overflows() - overflows
        _check(replies, "storm")
        # From the first node dialling again: before that the workers close the old connections.
        reconnecting = min(r["reconnecting"] for r in replies)
        result["storm_closing_s"] = reconnecting - started
        arrived = [at - reconnecting for r in replies for _, at, _ in r["maps"]]
        result["storm_all_s"] = max(arrived) if arrived else float("nan")
        result["storm_p50"] = percentile(arrived, 0.5)
        result["storm_p99"] = percentile(arrived, 0.99)
        result["storm_short_maps"] = _short_maps(replies, server.layout, probes)
        await settle(server)
        result["storm_cpu_s"] = cpu_seconds(server.pid) - cpu0
        result["storm_clients_cpu_s"] = workers.cpu_seconds() - clients0
        _sent(result, "storm", sent0, await server.map_metrics())
        result["storm_rss_mb"] = rss_bytes(server.pid) / 2**20


def _short_maps(replies: list[dict[str, Any]], tailnet: Layout, probes: int) -> int:
    """How many first full maps held fewer peers than the layout says (0 where it does not say)."""
    short = 0
    for reply in replies:
        for index, _, peers in reply["maps"]:
            want = tailnet.peers_of(index, probes)
            short += want is not None and peers < want
    return short


def _sent(result: dict[str, Any], phase: str, before: Any, after: Any) -> None:
    """Map messages and MB the server sent during `phase`, where it counts them."""
    if before is not None and after is not None:
        result[f"{phase}_mb"] = (after[0] - before[0]) / 2**20
        result[f"{phase}_msgs"] = after[1] - before[1]


def _count(into: list[tuple[float, float]], before: Any, after: Any) -> None:
    if before is not None and after is not None:
        into.append((after[0] - before[0], after[1] - before[1]))


def _check(replies: list[dict[str, Any]], phase: str) -> None:
    failed = sum(r["failed"] for r in replies)
    if failed:
        errors = [e for r in replies for e in r["errors"]]
        raise RuntimeError(f"{phase}: {failed} nodes failed, e.g. {errors[:3]}")


def _record(
    seen: list[float], sent: float, expected: int, to_all: list[float], each: list[float], marker: str
) -> None:
    if len(seen) < expected:
        print(f"  ! {marker}: only {len(seen)}/{expected} nodes saw it before the timeout", flush=True)
    each += [t - sent for t in seen]
    if seen:
        to_all.append(max(seen) - sent)


# (label, key, scale, format) for each row of the table.
ROWS = (
    ("registration (nodes/s)", "register_rate", 1, ".0f"),
    ("  server CPU (s)", "register_cpu_s", 1, ".1f"),
    ("all N hold first full map (s)", "connect_all_s", 1, ".1f"),
    ("  first map p50 (ms)", "first_map_p50", 1000, ".0f"),
    ("  first map p99 (ms)", "first_map_p99", 1000, ".0f"),
    ("  maps missing peers", "connect_short_maps", 1, "d"),
    ("  server CPU (s)", "connect_cpu_s", 1, ".1f"),
    ("  clients' CPU (s)", "connect_clients_cpu_s", 1, ".1f"),
    ("  map messages", "connect_msgs", 1, ".0f"),
    ("  MB sent", "connect_mb", 1, ".1f"),
    ("join -> all p50 (ms)", "join_all_p50", 1000, ".0f"),
    ("join -> all p99 (ms)", "join_all_p99", 1000, ".0f"),
    ("  per recipient p99 (ms)", "join_each_p99", 1000, ".0f"),
    ("endpoint -> all p50 (ms)", "move_all_p50", 1000, ".0f"),
    ("endpoint -> all p99 (ms)", "move_all_p99", 1000, ".0f"),
    ("  recipients per change", "probe_viewers", 1, "d"),
    ("bytes per join", "join_bytes", 1, ".0f"),
    ("bytes per endpoint move", "move_bytes", 1, ".0f"),
    ("server RSS, N streams (MB)", "rss_mb", 1, ".0f"),
    ("memory per idle stream (KB)", "stream_kb", 1, ".1f"),
    ("idle CPU (% of a core)", "idle_cpu_pct", 1, ".2f"),
    ("  keep-alives sent (/s)", "idle_keepalives_per_s", 1, ".0f"),
    ("  server CPU per keep-alive (µs)", "idle_us_per_keepalive", 1, ".0f"),
    ("map streams alive", "streams_alive", 1, "d"),
    ("restart: server ready (s)", "restart_s", 1, ".1f"),
    ("storm: old connections closed by the clients (s)", "storm_closing_s", 1, ".1f"),
    ("storm: last full map (s)", "storm_all_s", 1, ".1f"),
    ("  storm p50 (s)", "storm_p50", 1, ".1f"),
    ("  storm p99 (s)", "storm_p99", 1, ".1f"),
    ("  maps missing peers", "storm_short_maps", 1, "d"),
    ("  listen queue overflows", "storm_listen_overflows", 1, "d"),
    ("  server CPU (s)", "storm_cpu_s", 1, ".1f"),
    ("  clients' CPU (s)", "storm_clients_cpu_s", 1, ".1f"),
    ("  map messages", "storm_msgs", 1, ".0f"),
    ("  MB sent", "storm_mb", 1, ".1f"),
    ("  server RSS after (MB)", "storm_rss_mb", 1, ".0f"),
)


def table(results: list[dict[str, Any]]) -> str:
    """The figures of each run as a column of one markdown table."""
    heads = [f"{r['target']} N={r['nodes']} {r['policy']}" for r in results]
    lines = ["| figure | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for label, key, scale, fmt in ROWS:
        cells = []
        for r in results:
            value = r.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("—")
            else:
                cells.append(format(value * scale if scale != 1 else value, fmt))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for n in args.sizes:
        for target in args.target:
            result: dict[str, Any] = {"target": target, "nodes": n, "policy": args.policy}
            try:
                await asyncio.wait_for(run_size(n, target, args, result), args.deadline)
            except (TimeoutError, RuntimeError, subprocess.CalledProcessError) as exc:
                # What was measured before the cut stays in the table; the rest shows as "—".
                print(f"{target} N={n}: aborted: {exc!r}", flush=True)
                result["aborted"] = repr(exc)
            print(table([result]), flush=True)
            results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="200,1000", help="comma-separated node counts")
    parser.add_argument(
        "--target", default="pyheadscale", help="comma-separated servers: pyheadscale, headscale"
    )
    parser.add_argument("--policy", choices=("allow-all", "roles", "segmented"), default="allow-all")
    parser.add_argument(
        "--churn",
        action="store_true",
        help="map requests differ in Hostinfo from registration (connect = full update)",
    )
    parser.add_argument("--joins", type=int, default=5, help="probe joins (and endpoint moves) per size")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="idle CPU window (0: skip)")
    parser.add_argument(
        "--keepalive",
        type=float,
        help="pyheadscale's keep-alive interval in seconds (default: the server's, 50): a short one makes "
        "the idle window measure what each keep-alive costs",
    )
    parser.add_argument("--no-storm", dest="storm", action="store_false", help="skip the restart storm")
    parser.add_argument(
        "--storm-concurrency", type=int, default=0, help="reconnects in flight per worker (0: all at once)"
    )
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="registrations and stream opens in flight per worker"
    )
    parser.add_argument(
        "--propagation-timeout", type=float, default=60.0, help="seconds to wait for each change to arrive"
    )
    parser.add_argument(
        "--phase-timeout", type=float, default=PHASE_TIMEOUT, help="seconds allowed per phase"
    )
    parser.add_argument("--deadline", type=float, default=1200.0, help="seconds allowed per size and target")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--py-spy",
        type=Path,
        help="py-spy the server during the connect, idle and storm phases into PATH-<target>-<N>-<phase>",
    )
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.target = [t for t in args.target.split(",") if t]
    for name in args.target:
        if name not in ("pyheadscale", "headscale"):
            parser.error(f"--target: unknown server {name!r} (pyheadscale, headscale)")
    use_fast_json()
    results = asyncio.run(main_async(args))
    if len(results) > 1:
        print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
