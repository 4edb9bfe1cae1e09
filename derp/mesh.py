"""Meshing: one server's link to another server in the same region.

Each server dials every other with the shared mesh key and subscribes to its
connection list (WatchConns).  PeerPresent/PeerGone updates tell us which
node keys are reachable through that peer, and packets for those keys are
handed to the peer in ForwardPacket frames.  Links are one-way: a peer
forwards to us over its own link to us.

A link knows nothing of the server that owns it: it reports each key that
appears or leaves through the two callbacks it was given (as tailscale's
derphttp mesh client does with its add/remove functions), and counts its drops
in the counters it was handed.  So the relay depends on the mesh, never back.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

from derp import frames
from derp.client import DerpClient
from derp.client_conn import PacketCounters
from derp.frames import ProtocolError
from pyheadscale.tailkey import DerpMeshKey, NodePrivate

log = logging.getLogger(__name__)

DEFAULT_RETRY_INTERVAL = 5.0
FORWARD_QUEUE_DEPTH = 1024
"""Packets awaiting the mesh socket; beyond this the oldest is dropped, as for clients."""
MAX_FORWARD_BATCH = 256 << 10

PeerCallback = Callable[[bytes, "MeshLink"], None]
"""Told a node key that became reachable (or stopped being reachable) through this link."""


class MeshLink:
    """Our link to one mesh peer: learns its clients and forwards packets to them."""

    def __init__(
        self,
        url: str,
        private_key: NodePrivate,
        mesh_key: DerpMeshKey,
        *,
        counters: PacketCounters,
        on_peer_present: PeerCallback,
        on_peer_gone: PeerCallback,
        ssl: Any = None,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
    ) -> None:
        """``private_key`` is our server's: we log in to the peer as it, and a peer
        presenting its public half is ourselves."""
        self.url = url
        self._private_key = private_key
        self._public_key = private_key.public()
        self._mesh_key = mesh_key
        self._counters = counters
        self._on_peer_present = on_peer_present
        self._on_peer_gone = on_peer_gone
        self._ssl = ssl
        self._retry_interval = retry_interval
        self._client: DerpClient | None = None
        self._present: set[bytes] = set()
        self._queue: collections.deque[bytes] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.connected = asyncio.Event()
        """Set while the link is subscribed: the peer answered WatchConns with its client list."""
        self.last_error: str | None = None
        self.self_connect = False
        """True once we found that ``url`` is this very server."""

    def __repr__(self) -> str:
        return f"<MeshLink {self.url}>"

    @property
    def remote_clients(self) -> frozenset[bytes]:
        return frozenset(self._present)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"derp-mesh-{self.url}")

    def forward_packet(self, source: bytes, destination: bytes, data: bytes) -> None:
        if self._client is None:
            self._counters.drops.forward_queue_full += 1
            return
        if len(self._queue) >= FORWARD_QUEUE_DEPTH:
            self._queue.popleft()
            self._counters.drops.forward_queue_full += 1
        self._queue.append(frames.encode_forward_packet(source, destination, data))
        self._wake.set()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while not self._closed:
            try:
                client = await DerpClient.connect(
                    self.url,
                    self._private_key,
                    mesh_key=self._mesh_key,
                    ssl=self._ssl,
                    app_name="pyheadscale-derp-mesh",
                )
            except (OSError, ProtocolError, TimeoutError, asyncio.IncompleteReadError) as exc:
                self.last_error = f"connect failed: {exc}"
                log.info("mesh %s: %s", self.url, self.last_error)
                await asyncio.sleep(self._retry_interval)
                continue
            if client.server_public_key == self._public_key:
                log.info("mesh %s: that is this server; not meshing with myself", self.url)
                self.self_connect = True
                await client.close()
                return
            try:
                await self._serve(client)
            except Exception:
                # A bug here must not silently end meshing; log it and reconnect.
                log.exception("mesh %s: link failed", self.url)
            if not self._closed:
                await asyncio.sleep(self._retry_interval)

    async def _serve(self, client: DerpClient) -> None:
        writer: asyncio.Task[None] | None = None
        try:
            await client.watch_conns()
            self._client = client
            writer = asyncio.get_running_loop().create_task(self._write_loop(client))
            while True:
                message = await client.recv()
                if not self.connected.is_set():
                    # The peer's first reply lists its clients, which always include us.
                    self.connected.set()
                    log.info("mesh %s: connected", self.url)
                if isinstance(message, frames.PeerPresent):
                    if message.peer != self._public_key:
                        self._present.add(message.peer)
                        self._on_peer_present(message.peer, self)
                elif isinstance(message, frames.PeerGone):
                    self._present.discard(message.peer)
                    self._on_peer_gone(message.peer, self)
        except (OSError, ProtocolError, asyncio.IncompleteReadError) as exc:
            self.last_error = f"link lost: {exc}"
            log.info("mesh %s: %s", self.url, self.last_error)
        finally:
            self.connected.clear()
            self._client = None
            self._queue.clear()
            for key in self._present:
                self._on_peer_gone(key, self)
            self._present.clear()
            if writer is not None:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
            await client.close()

    async def _write_loop(self, client: DerpClient) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                parts: list[bytes] = []
                size = 0
                while self._queue and size < MAX_FORWARD_BATCH:
                    frame = self._queue.popleft()
                    parts.append(frame)
                    size += len(frame)
                await client.write_raw(b"".join(parts))
