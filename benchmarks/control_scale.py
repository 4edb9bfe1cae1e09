"""Control-plane scale: how registration, full maps and change propagation behave as a tailnet grows.

For each size N the benchmark starts a fresh server in its own process (`python -m pyheadscale -c cfg serve`
on a free loopback port, no DERP, metrics on), creates users and reusable preauth keys through the CLI, and
simulates N nodes from worker processes (`benchmarks/control_nodes.py`), each node one TCP connection with our
TS2021 ControlClient. Then it measures:

* registration rate: N nodes connecting (Noise) and registering, as nodes/s;
* time to first full map: from a node's streaming map request to its first MapResponse, all N opening at once;
* join propagation: a probe node registers; how long until every connected node that may see it has it in a
  PeersChanged (per join: the time to the last recipient; also every recipient's latency pooled);
* endpoint propagation: a probe reports a new endpoint; how long until its peers get the PeersChangedPatch;
* server memory: VmRSS with N connected, and per node above the idle server's RSS;
* bytes on the wire per join and per endpoint change, from the server's own /metrics counters.

With `--policy`, four users and tagged servers are registered under a policy with groups and tags, so a probe
is seen only by its group and the servers rather than by everybody. Everything is bounded: each phase has a
timeout, each size a deadline, and the run stops by itself. `--py-spy PATH` samples the server with py-spy.
Usage:

    python benchmarks/control_scale.py [--sizes 100,500,1000,2000] [--policy] [--joins 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.control_nodes import MOVED_ENDPOINT_PREFIX, PROBE_PREFIX, use_fast_json, worker_main
from pyheadscale import keys
from pyheadscale.client.control import ControlClient

POLICY = {
    "groups": {"group:eng": ["alice@", "bob@"], "group:ops": ["carol@"]},
    "tagOwners": {"tag:server": ["group:ops"]},
    "acls": [
        {"action": "accept", "src": ["group:eng"], "dst": ["group:eng:*", "tag:server:443"]},
        {"action": "accept", "src": ["group:ops"], "dst": ["tag:server:22"]},
        {"action": "accept", "src": ["tag:server"], "dst": ["tag:server:*"]},
    ],
}
# Node i's owner under --policy is ROLES[i % 5]; "server" nodes are tagged tag:server (keys owned by carol).
ROLES = ("alice", "bob", "carol", "dave", "server")
# A probe is alice's: group:eng (alice, bob) and the servers may see it; carol and dave may not.
PROBE_VIEWERS = {"alice", "bob", "server"}
PHASE_TIMEOUT = 300.0
SETTLE_SECONDS = 0.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999) - 1))
    return ordered[rank]


def rss_bytes(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", text, re.M)
    return int(match.group(1)) * 1024 if match else 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """A pyheadscale server in a child process, configured in a temporary directory."""

    def __init__(self, workdir: Path, policy: bool) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.metrics_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config: dict[str, Any] = {
            "server_url": self.url,
            "listen_addr": f"127.0.0.1:{self.port}",
            "metrics_listen_addr": f"127.0.0.1:{self.metrics_port}",
            "unix_socket": str(workdir / "pyheadscale.sock"),
            "derp": {"server": {"enabled": False}, "urls": [], "paths": []},
            "database": {"type": "sqlite", "sqlite": {"path": str(workdir / "db.sqlite")}},
            "noise": {"private_key_path": str(workdir / "noise.key")},
            "log": {"level": "warning"},
        }
        if policy:
            (workdir / "policy.json").write_text(json.dumps(POLICY))
            config["policy"] = {"mode": "file", "path": str(workdir / "policy.json")}
        self.config_path = workdir / "config.yaml"
        self.config_path.write_text(json.dumps(config))  # JSON is YAML
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.workdir / "server.log").open("wb")
        command = [sys.executable, "-m", "pyheadscale", "-c", str(self.config_path), "serve"]
        self.proc = subprocess.Popen(command, stdout=log, stderr=log)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def wait_ready(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.workdir / 'server.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                if (await self.http_get(self.port, "/health")).startswith(b'{"status": "pass"'):
                    return
            await asyncio.sleep(0.1)
        raise TimeoutError("server did not become ready")

    async def http_get(self, port: int, path: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            raw = await reader.read()
        finally:
            writer.close()
        return raw.partition(b"\r\n\r\n")[2]

    async def metrics(self) -> tuple[float, float]:
        """(map bytes, map messages) sent so far."""
        text = (await self.http_get(self.metrics_port, "/metrics")).decode()
        total_bytes = sum(float(v) for v in re.findall(r"^pyheadscale_map_bytes_total (\S+)$", text, re.M))
        counted = re.findall(r"^pyheadscale_map_messages_total\{[^}]*\} (\S+)$", text, re.M)
        messages = sum(float(v) for v in counted)
        return total_bytes, messages

    def cli(self, *args: str) -> Any:
        out = subprocess.run(
            [sys.executable, "-m", "pyheadscale", "-c", str(self.config_path), "-o", "json", *args],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return json.loads(out.stdout)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Workers:
    """The client processes, each behind a pipe; sightings from all of them land in `seen`."""

    def __init__(self, url: str, count: int, concurrency: int, churn: bool) -> None:
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

    async def call(self, per_worker: list[tuple[Any, ...]], within: float = PHASE_TIMEOUT) -> list[Any]:
        for pipe, command in zip(self.pipes, per_worker, strict=True):
            pipe.send(command)
        return list(await asyncio.wait_for(asyncio.gather(*(q.get() for q in self.replies)), within))

    async def wait_seen(self, marker: str, expected: int, within: float) -> list[float]:
        """The receive times of `marker` once `expected` nodes saw it, or whatever arrived within `within`."""
        deadline = time.monotonic() + within
        while len(self.seen[marker]) < expected and time.monotonic() < deadline:  # noqa: ASYNC110 - polled
            await asyncio.sleep(0.005)
        return list(self.seen[marker])

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(Exception):
                pipe.send(("stop",))
        for proc in self.procs:
            proc.join(timeout=15)
            if proc.is_alive():
                proc.kill()


async def settle(server: ServerProcess, limit: float = 60.0) -> None:
    """Wait until the server stops sending map messages (deltas from the last change have drained)."""
    deadline = time.monotonic() + limit
    last = await server.metrics()
    while time.monotonic() < deadline:
        await asyncio.sleep(SETTLE_SECONDS)
        now = await server.metrics()
        if now[1] == last[1]:
            return
        last = now


def role_of(index: int, policy: bool) -> str:
    return ROLES[index % len(ROLES)] if policy else "alice"


def start_profiler(out: Path, pid: int) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` into `out` as collapsed stacks until it gets SIGINT."""
    command = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "50", "--output", str(out)]
    return subprocess.Popen(command)


async def run_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pyhs-bench-") as tmp:
        server = ServerProcess(Path(tmp), args.policy)
        server.start()
        spawned: list[Workers] = []
        probes: list[ControlClient] = []
        profiler: subprocess.Popen[bytes] | None = None
        try:
            await server.wait_ready()
            if args.py_spy:
                out = args.py_spy.with_name(f"{args.py_spy.stem}-{n}{args.py_spy.suffix}")
                profiler = start_profiler(out, server.pid)
            return await _measure(n, args, server, probes, spawned)
        finally:
            for probe in probes:
                await probe.close()
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(timeout=60)
            server.stop()
            for workers in spawned:
                workers.stop()


async def _measure(
    n: int,
    args: argparse.Namespace,
    server: ServerProcess,
    probes: list[ControlClient],
    spawned: list[Workers],
) -> dict[str, Any]:
    """One size's figures; `probes` and `spawned` collect what the caller must close."""
    result: dict[str, Any] = {"nodes": n, "policy": args.policy}
    users = ["alice", "bob", "carol", "dave"] if args.policy else ["alice"]
    auth: dict[str, str] = {}
    for name in users:
        server.cli("users", "create", name)
        auth[name] = server.cli("preauthkeys", "create", "-u", name, "--reusable", "-e", "24h")["key"]
    if args.policy:
        auth["server"] = server.cli(
            "preauthkeys", "create", "-u", "carol", "--reusable", "-e", "24h", "--tags", "tag:server"
        )["key"]
    idle_rss = rss_bytes(server.pid)

    workers = Workers(server.url, args.workers, args.concurrency, args.churn)
    spawned.append(workers)
    specs: list[list[tuple[int, str, str]]] = [[] for _ in range(args.workers)]
    for i in range(n):
        role = role_of(i, args.policy)
        specs[i % args.workers].append((i, f"node-{i}", auth[role]))

    cpu0 = cpu_seconds(server.pid)
    started = time.monotonic()
    replies = await workers.call([("register", s) for s in specs])
    elapsed = time.monotonic() - started
    _check(replies, "register")
    result["register_rate"] = n / elapsed
    result["register_cpu_s"] = cpu_seconds(server.pid) - cpu0

    cpu0 = cpu_seconds(server.pid)
    started = time.monotonic()
    replies = await workers.call([("connect",)] * args.workers)
    _check(replies, "connect")
    latencies = [x for r in replies for x in r["latencies"]]
    result["connect_all_s"] = time.monotonic() - started
    result["first_map_p50"] = percentile(latencies, 0.5)
    result["first_map_p99"] = percentile(latencies, 0.99)
    await settle(server)
    result["connect_cpu_s"] = cpu_seconds(server.pid) - cpu0
    rss = rss_bytes(server.pid)
    result["rss_mb"] = rss / 2**20
    result["rss_per_node_kb"] = (rss - idle_rss) / n / 1024

    expected = sum(1 for i in range(n) if role_of(i, args.policy) in PROBE_VIEWERS)
    result["probe_viewers"] = expected
    server_public = keys.parse_key(
        json.loads(await server.http_get(server.port, "/key?v=130"))["publicKey"], keys.MACHINE_PUBLIC_PREFIX
    )
    join_all: list[float] = []
    join_each: list[float] = []
    join_bytes: list[float] = []
    join_msgs: list[float] = []
    move_all: list[float] = []
    move_each: list[float] = []
    move_bytes: list[float] = []
    move_msgs: list[float] = []
    cpu0 = cpu_seconds(server.pid)
    for j in range(args.joins):
        name = f"{PROBE_PREFIX}{j}"
        client = ControlClient(server.url, keys.PrivateKey.generate())
        probes.append(client)
        await client.connect(server_public)
        node_key = keys.PrivateKey.generate()
        before = await server.metrics()
        sent = time.monotonic()
        await client.register(node_key, auth_key=auth["alice"], hostname=name)
        seen = await workers.wait_seen(name, expected, args.propagation_timeout)
        _record(seen, sent, expected, join_all, join_each, name)
        await settle(server)
        after = await server.metrics()
        join_bytes.append(after[0] - before[0])
        join_msgs.append(after[1] - before[1])

        marker = f"{MOVED_ENDPOINT_PREFIX}{j + 1}:41641"
        before = await server.metrics()
        sent = time.monotonic()
        status, body = await client.request(
            "POST",
            "/machine/map",
            {
                "Version": client.capver,
                "NodeKey": keys.node_public_text(node_key.public()),
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
        after = await server.metrics()
        move_bytes.append(after[0] - before[0])
        move_msgs.append(after[1] - before[1])
    result["changes_cpu_s"] = cpu_seconds(server.pid) - cpu0
    result["join_all_p50"], result["join_all_p99"] = percentile(join_all, 0.5), percentile(join_all, 0.99)
    result["join_each_p50"], result["join_each_p99"] = percentile(join_each, 0.5), percentile(join_each, 0.99)
    result["move_all_p50"], result["move_all_p99"] = percentile(move_all, 0.5), percentile(move_all, 0.99)
    result["move_each_p50"], result["move_each_p99"] = percentile(move_each, 0.5), percentile(move_each, 0.99)
    result["join_bytes"] = sum(join_bytes) / max(1, len(join_bytes))
    result["join_msgs"] = sum(join_msgs) / max(1, len(join_msgs))
    result["move_bytes"] = sum(move_bytes) / max(1, len(move_bytes))
    result["move_msgs"] = sum(move_msgs) / max(1, len(move_msgs))
    alive = sum(await workers.call([("ping",)] * args.workers))
    result["streams_alive"] = alive
    return result


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


def report(r: dict[str, Any]) -> None:
    ms = 1000.0
    scope = f" (policy: probe seen by {r['probe_viewers']})" if r["policy"] else ""
    print(f"N={r['nodes']}{scope}")
    print(f"  registration      {r['register_rate']:8.1f} nodes/s   (server CPU {r['register_cpu_s']:.1f}s)")
    print(
        f"  first full map    p50 {r['first_map_p50'] * ms:8.1f} ms  p99 {r['first_map_p99'] * ms:8.1f} ms"
        f"   (all {r['nodes']} connected in {r['connect_all_s']:.1f}s,"
        f" server CPU {r['connect_cpu_s']:.1f}s)"
    )
    print(
        f"  join -> all       p50 {r['join_all_p50'] * ms:8.1f} ms  p99 {r['join_all_p99'] * ms:8.1f} ms"
        f"   (per recipient p50 {r['join_each_p50'] * ms:.1f} p99 {r['join_each_p99'] * ms:.1f} ms)"
    )
    print(
        f"  endpoint -> all   p50 {r['move_all_p50'] * ms:8.1f} ms  p99 {r['move_all_p99'] * ms:8.1f} ms"
        f"   (per recipient p50 {r['move_each_p50'] * ms:.1f} p99 {r['move_each_p99'] * ms:.1f} ms)"
    )
    print(
        f"  server RSS        {r['rss_mb']:8.1f} MB      ({r['rss_per_node_kb']:.1f} KB per node above idle)"
    )
    print(
        f"  bytes per join    {r['join_bytes']:10.0f} B in {r['join_msgs']:.0f} messages"
        f"   ({r['join_bytes'] / max(1, r['join_msgs']):.0f} B/message)"
    )
    print(
        f"  bytes per move    {r['move_bytes']:10.0f} B in {r['move_msgs']:.0f} messages"
        f"   (server CPU for joins+moves {r['changes_cpu_s']:.1f}s)"
    )
    print(f"  map streams alive at the end: {r['streams_alive']}", flush=True)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for n in args.sizes:
        try:
            result = await asyncio.wait_for(run_size(n, args), args.deadline)
        except (TimeoutError, RuntimeError) as exc:
            print(f"N={n}: aborted: {exc!r}", flush=True)
            break
        report(result)
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,500,1000,2000", help="comma-separated node counts")
    parser.add_argument("--policy", action="store_true", help="groups and tags instead of allow-all")
    parser.add_argument(
        "--churn",
        action="store_true",
        help="map requests differ in Hostinfo from registration (connect = full update)",
    )
    parser.add_argument("--joins", type=int, default=5, help="probe joins (and endpoint moves) per size")
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="registrations and stream opens in flight per worker"
    )
    parser.add_argument(
        "--propagation-timeout", type=float, default=60.0, help="seconds to wait for each change to arrive"
    )
    parser.add_argument("--deadline", type=float, default=1200.0, help="seconds allowed per size")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--py-spy", type=Path, help="profile the server with py-spy into PATH-<N> (collapsed stacks)"
    )
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    use_fast_json()
    results = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
