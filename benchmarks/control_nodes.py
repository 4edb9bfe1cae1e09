"""The client side of the control-plane benchmark: one process simulating many nodes with our ControlClient.

`benchmarks/control_scale.py` starts a few of these (so simulated nodes do not share the server's CPU core)
and drives them over a pipe. Each simulated node is one TCP connection carrying Noise and HTTP/2, as a real
tailscaled has: it registers with a preauth key, then opens a streaming map and reads every message. What
the coordinator wants back are times: when each node got its first full map, and when it first saw a probe
node join (a PeersChanged entry whose hostname starts with `probe-`) or a probe's endpoint move (a
PeersChangedPatch whose first endpoint is in 192.0.2.0/24). Times are `time.monotonic()`, one clock for every
process on Linux, so the coordinator can subtract its own send time from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import types
from multiprocessing.connection import Connection
from typing import Any

from pyheadscale.client import control
from pyheadscale.client.control import ControlClient, ControlClientError, fetch_server_key
from pyheadscale.tailkey import MachinePrivate, MachinePublic, NodePrivate

PROBE_PREFIX = "probe-"
MOVED_ENDPOINT_PREFIX = "192.0.2."
REPORT_INTERVAL = 0.05
# Messages this large are skimmed rather than decoded when they hold no marker (see `skim`).
SKIM_BYTES = 64 << 10


def skim(body: bytes) -> dict[str, Any]:
    """A map message as far as the benchmark reads it, without decoding what it does not read.

    Of a full map (a message with a `Node`) a simulated node wants only that it arrived and how many peers it
    holds; the probe markers it looks for are in deltas (PeersChanged, PeersChangedPatch), which a full map
    never carries. A full map of N peers is O(N) of JSON per node and every node gets one, so decoding each
    whole made the simulator, not the server, the limit of a storm (at 2,000 nodes the clients used three
    times the server's CPU). So a large full map is counted instead: its peers are its node entries (each
    has one `StableID`, Go's field name, the same from Headscale) less the recipient's own. Everything else
    is decoded in full.
    """
    if len(body) < SKIM_BYTES or b'"Node":{' not in body:
        return dict(_loads(body))
    return {"Node": {}, "PeerCount": body.count(b'"StableID":') - 1}


def _loads(body: bytes) -> Any:
    try:
        import orjson
    except ImportError:
        return json.loads(body)
    return orjson.loads(body)


def use_fast_json() -> None:
    """Write requests and parse register answers with orjson when it is installed.

    Every simulated node parses every message it receives; with json.loads the clients would take CPU from the
    server on a small machine and the figures would measure the simulator. Map frames already decode with
    orjson when it is installed (pyheadscale.tailcfg.frame); this patches the rest of the client, in this
    benchmark's process only.
    """
    try:
        import orjson
    except ImportError:
        return
    control.json = types.SimpleNamespace(  # type: ignore[assignment]
        loads=orjson.loads, dumps=lambda value, **_: orjson.dumps(value).decode()
    )


class SimulatedNode:
    """One node: its keys, its connection, and what it has seen."""

    def __init__(self, index: int, hostname: str) -> None:
        self.index = index
        self.hostname = hostname
        self.machine_key = MachinePrivate.generate()
        self.node_key = NodePrivate.generate()
        self.client: ControlClient | None = None
        self.first_map: asyncio.Future[float] | None = None
        # When the latest stream's first full map arrived, and how many peers it held.
        self.full_map_at = 0.0
        self.full_map_peers = -1


class Worker:
    """Runs the simulated nodes of one process and answers the coordinator's commands."""

    def __init__(self, url: str, conn: Connection, concurrency: int, churn: bool) -> None:
        self.url = url
        self.conn = conn
        self.concurrency = concurrency
        self.churn = churn
        self.nodes: list[SimulatedNode] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.sightings: list[tuple[str, float]] = []
        self.server_key: MachinePublic | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        commands: asyncio.Queue[Any] = asyncio.Queue()

        def read_commands() -> None:
            while True:
                try:
                    message = self.conn.recv()
                except EOFError:
                    message = ("stop",)
                loop.call_soon_threadsafe(commands.put_nowait, message)
                if message[0] == "stop":
                    return

        threading.Thread(target=read_commands, daemon=True).start()
        reporter = loop.create_task(self._report_sightings())
        try:
            while True:
                command, *args = await commands.get()
                if command == "stop":
                    break
                handler = getattr(self, f"cmd_{command}")
                self.conn.send((command, await handler(*args)))
        finally:
            reporter.cancel()
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            for node in self.nodes:
                if node.client is not None:
                    await node.client.close()

    async def _report_sightings(self) -> None:
        """Send what nodes saw in batches; each sighting carries its own receive time, so batching is free."""
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            if self.sightings:
                batch, self.sightings = self.sightings, []
                self.conn.send(("seen", batch))

    async def _bounded(self, jobs: list[Any]) -> list[Any]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(job: Any) -> Any:
            async with gate:
                return await job

        return list(await asyncio.gather(*(one(j) for j in jobs), return_exceptions=True))

    async def cmd_register(self, specs: list[tuple[int, str, str]]) -> dict[str, Any]:
        """Connect and register each (index, hostname, auth key); returns elapsed time and failures."""
        self.server_key = self.server_key or await fetch_server_key(self.url)
        started = time.monotonic()
        new = [SimulatedNode(index, hostname) for index, hostname, _ in specs]
        self.nodes += new
        jobs = [self._register(n, key) for n, (_, _, key) in zip(new, specs, strict=True)]
        results = await self._bounded(jobs)
        errors = [repr(r) for r in results if isinstance(r, BaseException)]
        return {"elapsed": time.monotonic() - started, "errors": errors[:5], "failed": len(errors)}

    async def _register(self, node: SimulatedNode, auth_key: str) -> None:
        client = ControlClient(self.url, node.machine_key)
        await client.connect(self.server_key)
        node.client = client
        answer = await client.register(node.node_key, auth_key=auth_key, hostinfo=self._hostinfo(node))
        if not answer.get("MachineAuthorized"):
            raise RuntimeError(f"{node.hostname} not authorized: {answer}")

    async def cmd_connect(self) -> dict[str, Any]:
        """Open every registered node's map stream; returns each node's time to its first full map."""
        loop = asyncio.get_running_loop()
        ready = [n for n in self.nodes if n.client is not None and n.first_map is None]
        for node in ready:
            node.first_map = loop.create_future()

        async def open_one(node: SimulatedNode) -> float:
            assert node.first_map is not None and node.client is not None
            if node.client.closed:
                # The server closed a connection left idle since registration (its idle timeout, 2 min by
                # default): a tailscaled dials again, and so does the simulated node.
                await self._redial(node)
            self.tasks.append(loop.create_task(self._follow(node, time.monotonic())))
            return await node.first_map

        # Every stream at once, as each tailscaled opens its map poll right after registering: held back
        # behind `concurrency`, a node would sit on an idle connection until the server closes it.
        gate = self.concurrency
        self.concurrency = len(ready) or 1
        try:
            results = await self._bounded([open_one(n) for n in ready])
        finally:
            self.concurrency = gate
        latencies = [r for r in results if isinstance(r, float)]
        errors = [repr(r) for r in results if isinstance(r, BaseException)]
        maps = [(n.index, n.full_map_at, n.full_map_peers) for n in ready if n.full_map_peers >= 0]
        return {"latencies": latencies, "maps": maps, "errors": errors[:5], "failed": len(errors)}

    async def cmd_storm(self, concurrency: int) -> dict[str, Any]:
        """Reconnect every node (new Noise connection, new map stream) at once, as after a server restart.

        Returns, per node, (index, when its first full map arrived, how many peers it held).
        """
        loop = asyncio.get_running_loop()
        self.server_key = await fetch_server_key(self.url)
        old = [t for t in self.tasks if not t.done()]
        for task in old:
            task.cancel()
        await asyncio.gather(*old, return_exceptions=True)
        self.tasks = [t for t in self.tasks if not t.done()]
        for node in self.nodes:
            if node.client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(node.client.close(), 5)
            node.client = None
            node.full_map_at, node.full_map_peers = 0.0, -1
        # Tidying up the old connections is the simulation's own work (a tailscaled sees its connection reset
        # and dials again): the storm is timed from here.
        reconnecting = time.monotonic()

        async def reconnect(node: SimulatedNode) -> float:
            client = ControlClient(self.url, node.machine_key)
            await client.connect(self.server_key)
            node.client = client
            node.first_map = loop.create_future()
            self.tasks.append(loop.create_task(self._follow(node, time.monotonic())))
            return await node.first_map

        gate = self.concurrency
        self.concurrency = concurrency or len(self.nodes) or 1
        try:
            results = await self._bounded([reconnect(n) for n in self.nodes])
        finally:
            self.concurrency = gate
        errors = [repr(r) for r in results if isinstance(r, BaseException)]
        maps = [(n.index, n.full_map_at, n.full_map_peers) for n in self.nodes if n.full_map_peers >= 0]
        return {"maps": maps, "errors": errors[:5], "failed": len(errors), "reconnecting": reconnecting}

    async def _follow(self, node: SimulatedNode, opened: float) -> None:
        assert node.client is not None and node.first_map is not None
        try:
            try:
                await self._read(node, node.client, opened)
            except ControlClientError:
                if node.first_map.done() or not node.client.closed:
                    raise
                # The server's idle timeout closed the connection just as the stream was opened on it: dial
                # again, once.
                await self._redial(node)
                await self._read(node, node.client, opened)
        except Exception as exc:
            if not node.first_map.done():
                node.first_map.set_exception(exc)
        finally:
            if not node.first_map.done():
                node.first_map.set_exception(RuntimeError("map stream ended before the first map"))

    async def _redial(self, node: SimulatedNode) -> None:
        node.client = ControlClient(self.url, node.machine_key)
        await node.client.connect(self.server_key)

    async def _read(self, node: SimulatedNode, client: ControlClient, opened: float) -> None:
        """Follow one map stream: its first full map, and the probes' markers in what comes after."""
        assert node.first_map is not None
        # A tailscaled sends the Hostinfo it registered with; with `churn` the map request's differs, so
        # each stream opening is a full node update for every peer rather than an online patch.
        hostinfo = {"Hostinfo": self._hostinfo(node) | ({"GoArch": "arm64"} if self.churn else {})}
        stream = client.map_stream(node.node_key, hostname=node.hostname, extra=hostinfo, parse=skim)
        seen: set[str] = set()  # a marker counts once per node, whatever messages repeat it

        def sighted(marker: str, when: float) -> None:
            if marker not in seen:
                seen.add(marker)
                self.sightings.append((marker, when))

        async for message in stream:
            now = time.monotonic()
            if not node.first_map.done() and "Node" in message:
                peers = message.get("PeerCount", len(message.get("Peers") or ()))
                node.full_map_at, node.full_map_peers = now, peers
                node.first_map.set_result(now - opened)
            for peer in message.get("PeersChanged") or ():
                name = (peer.get("Hostinfo") or {}).get("Hostname", "")
                if name.startswith(PROBE_PREFIX):
                    sighted(name, now)
                # Headscale sends an endpoint move as the whole node rather than a patch.
                endpoints = peer.get("Endpoints") or ()
                if endpoints and endpoints[0].startswith(MOVED_ENDPOINT_PREFIX):
                    sighted(endpoints[0], now)
            for patch in message.get("PeersChangedPatch") or ():
                endpoints = patch.get("Endpoints") or ()
                if endpoints and endpoints[0].startswith(MOVED_ENDPOINT_PREFIX):
                    sighted(endpoints[0], now)

    @staticmethod
    def _hostinfo(node: SimulatedNode) -> dict[str, Any]:
        return {"Hostname": node.hostname, "OS": "linux", "GoArch": "amd64"}

    async def cmd_ping(self) -> int:
        """How many map streams are still being read (the coordinator checks none died)."""
        return sum(1 for t in self.tasks if not t.done())


def worker_main(url: str, conn: Connection, concurrency: int, churn: bool) -> None:
    """Process entry point."""
    use_fast_json()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(Worker(url, conn, concurrency, churn).run())
