"""`POST /machine/map`: endpoint updates, one-shot maps and the streaming long poll.

Each message is a map frame (pyheadscale.tailcfg.frame), zstd-compressed when the request asks.
The stream opens with a full map; after that, the session's pending deltas are written as they arrive, and a
keep-alive goes out when the stream has been idle for the keep-alive interval (pyheadscale.control.keepalive).
"""

from __future__ import annotations

import asyncio
import logging
import time

from pyheadscale.control.decode import decode
from pyheadscale.control.full_maps import FullMapTurns
from pyheadscale.control.h2server import InnerRequest, ResponseStream, StreamClosed
from pyheadscale.control.keepalive import KeepAliveWheel, Outcome
from pyheadscale.control.noise import NoiseError
from pyheadscale.mapper.builder import MapBuilder, MapMessage
from pyheadscale.mapper.distributor import Distributor, MapSession
from pyheadscale.metrics import Metrics
from pyheadscale.state.errors import AccessRevoked, NotFound
from pyheadscale.state.store import Store
from pyheadscale.tailcfg.frame import encode_frame
from pyheadscale.tailcfg.map_response import KEEPALIVE
from pyheadscale.tailcfg.requests import MapRequest
from pyheadscale.tailkey import MachinePublic

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 50.0


class MapHandler:
    def __init__(
        self,
        store: Store,
        builder: MapBuilder,
        distributor: Distributor,
        metrics: Metrics,
        *,
        keepalive: float = KEEPALIVE_SECONDS,
    ) -> None:
        self.metrics = metrics
        self.streams = 0
        self.store = store
        self.builder = builder
        self.distributor = distributor
        # The same bytes every time, and thousands of idle streams send them: encoded once.
        self._keepalive_frames = {c: encode_frame(KEEPALIVE, c) for c in (False, True)}
        self._keepalive_bytes = 0  # sent since the wheel last counted them into the metrics
        self.keepalives = KeepAliveWheel(keepalive, on_sent=self._count_keepalives)
        self.full_maps = FullMapTurns()

    async def close(self) -> None:
        await self.keepalives.close()

    async def handle(self, request: InnerRequest, machine_key: MachinePublic) -> None:
        req = await decode(request, MapRequest)
        if req is None:
            return
        node = self.store.node_by_node_key(req.NodeKey)
        if node is None:
            await request.response.respond(404, b"node not found", "text/plain")
            return
        if node.machine_key != machine_key.text:
            await request.response.respond(401, b"node key does not belong to this machine", "text/plain")
            return
        compress = req.Compress == "zstd"
        try:
            if not self.store.may_connect(node):
                raise AccessRevoked("node key expired")
            if not req.ReadOnly:
                node = await self.store.update_from_map_request(
                    node, disco_key=req.DiscoKey or None, endpoints=req.Endpoints, hostinfo=req.Hostinfo
                )
        except NotFound:  # deleted while this request was in flight
            await request.response.respond(404, b"node not found", "text/plain")
            return
        except AccessRevoked:
            await self._refuse_revoked(request, node.id, req, compress)
            return
        if not req.Stream:
            if req.OmitPeers:
                # A "lite" update: the client only checks the status.
                await request.response.respond(200, b"", "application/json")
                self.metrics.hs_endpoint_updates.labels("ok").inc()
                return
            async with self.full_maps.turn():
                full, _ = self.builder.full(node, req.Version)
                data = self._encode(MapMessage("full", full), compress)
            await request.response.respond(200, data, "application/json")
            return
        await self._stream(request, node.id, req.Version, compress)

    async def _refuse_revoked(
        self, request: InnerRequest, node_id: int, req: MapRequest, compress: bool
    ) -> None:
        """An expired node's request: its update is dropped, and it learns only that it expired.

        A lite update (OmitPeers without Stream) is refused outright; a map request, streaming or not, gets
        one message holding its own expired node and nothing about anyone else, and the response ends.
        """
        node = self.store.nodes.get(node_id)
        if node is None:
            await request.response.respond(404, b"node not found", "text/plain")
        elif req.OmitPeers and not req.Stream:
            await request.response.respond(403, b"node key expired: log in again", "text/plain")
        else:
            message = self._encode(MapMessage("revoked", self.builder.revoked(node, req.Version)), compress)
            await request.response.respond(200, message, "application/json")

    def _encode(self, message: MapMessage, compress: bool) -> bytes:
        data = encode_frame(message.response, compress)
        self.metrics.map_sent(message.kind)
        self.metrics.map_bytes.inc(len(data))
        return data

    def keepalive_written(self, size: int) -> None:
        self._keepalive_bytes += size

    def _count_keepalives(self, count: int) -> None:
        """Once a tick, rather than once a keep-alive: metrics take a lock per increment."""
        self.metrics.map_sent("keepalive", count)
        self.metrics.map_bytes.inc(self._keepalive_bytes)
        self._keepalive_bytes = 0

    def _take(self, session: MapSession, compress: bool) -> bytes | None:
        """The session's pending changes as one encoded message, or None when nothing is pending."""
        message = session.take_pending(self.builder)
        return None if message is None else self._encode(message, compress)

    async def _stream(self, request: InnerRequest, node_id: int, capver: int, compress: bool) -> None:
        session = MapSession(node_id, capver)
        session.want_full()
        self.distributor.add(session)
        self.streams += 1
        self.store.connected(node_id)
        response = request.response
        pacing = self.distributor.pacing
        keepalive = StreamKeepAlive(self, session, response, self._keepalive_frames[compress])
        try:
            await response.start(200, {"content-type": "application/json"})
            self.keepalives.start()
            self.keepalives.add(keepalive)
            last_sent = float("-inf")  # the last map message (keep-alives are not the stream being busy)
            while not session.closed:
                await session.wake.wait()
                # Changes that arrive while it waits go out in the same message (pyheadscale.mapper.pacing).
                held = pacing.hold(last_sent, session.woken_at, time.monotonic())
                if held > 0:
                    await asyncio.sleep(held)
                if session.closed:
                    break
                if session.full_pending:
                    async with self.full_maps.turn():
                        data = None if session.closed else self._take(session, compress)
                    if data is not None:
                        last_sent = keepalive.last_sent = time.monotonic()
                        await response.send(data)
                    continue
                started = time.perf_counter()
                data = self._take(session, compress)
                if data is not None:
                    await response.send(data)
                    last_sent = keepalive.last_sent = time.monotonic()
                    pacing.record(time.perf_counter() - started)
        except asyncio.CancelledError:
            self.metrics.hs_map_ended.labels("cancelled").inc()
            raise
        else:
            self.metrics.hs_map_ended.labels("done").inc()
        finally:
            self.keepalives.discard(keepalive)
            self.streams -= 1
            self.distributor.remove(session)
            await self.store.disconnected(node_id)


class StreamKeepAlive:
    """One map stream as the keep-alive wheel sees it: when it last wrote, and how to send its keep-alive."""

    __slots__ = ("_frame", "_handler", "_response", "_session", "last_sent")

    def __init__(
        self, handler: MapHandler, session: MapSession, response: ResponseStream, frame: bytes
    ) -> None:
        self._handler = handler
        self._session = session
        self._response = response
        self._frame = frame
        self.last_sent = time.monotonic()

    def keep_alive(self) -> Outcome:
        store = self._handler.store
        node = store.nodes.get(self._session.node_id)
        if node is not None and not store.may_connect(node):
            # Expiry timers run on the loop's clock; a wall clock that jumped past a node's expiry is caught
            # here, at the latest one keep-alive interval later: the stream's task sends the expired node
            # its last message and ends.
            self._session.want_full()
            return "ended"
        try:
            if not self._response.send_nowait(self._frame):
                return "busy"
        except (StreamClosed, NoiseError):
            self._session.close()  # its task ends the stream, as a failed write of its own would
            return "ended"
        self.last_sent = time.monotonic()
        self._handler.keepalive_written(len(self._frame))
        return "sent"
