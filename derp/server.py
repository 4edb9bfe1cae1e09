"""The DERP relay: who is connected, and where each packet goes.

A :class:`DerpServer` is transport-agnostic: :meth:`DerpServer.accept` runs
one client's whole session over any :class:`derp.conn.Conn`; ``derp.http``
wires it into aiohttp.  Packets go to a local client when the destination is
connected here, otherwise to a mesh peer that has announced the destination
(see ``derp.mesh``), otherwise they are dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from derp import frames
from derp.admission import AdmissionController, ClientAdmission, ClientVerifier
from derp.client_conn import BatchBuffer, ClientConn, PacketCounters
from derp.conn import Conn, read_frame
from derp.frames import FrameType, PeerGoneReason, ProtocolError
from derp.handshake import (
    ServerInfo,
    decode_client_info,
    encode_server_info,
    encode_server_key,
)
from derp.mesh import MeshLink
from pyheadscale.tailkey import KEY_LEN, DerpMeshKey, NodePrivate, NodePublic

log = logging.getLogger(__name__)

DEFAULT_SEND_QUEUE_DEPTH = 32
DEFAULT_WRITE_TIMEOUT = 2.0
MESH_WRITE_TIMEOUT = 30.0
"""Mesh peers get longer to absorb the initial flood of PeerPresent frames."""
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DUPLICATE_HEALTH_MESSAGE = "duplicate connection for this node key; another connection is active"

_SESSION_ERRORS = (
    ProtocolError,
    ConnectionError,
    asyncio.IncompleteReadError,
    TimeoutError,
)


class PacketForwarder(Protocol):
    """Something that can carry a packet to a client connected elsewhere in the region."""

    def forward_packet(self, source: bytes, destination: bytes, data: bytes) -> None:
        """Queue the packet without blocking; drop it if the path is congested."""


class _ClientSet:
    """Every live connection for one node key; ``active`` is the one that receives."""

    __slots__ = ("active", "conns")

    def __init__(self, first: ClientConn) -> None:
        self.conns: list[ClientConn] = [first]
        self.active = first


class DerpServer:
    """A DERP relay server. See the ``derp`` package docstring for how to embed it."""

    def __init__(
        self,
        private_key: NodePrivate | bytes,
        *,
        mesh_key: DerpMeshKey | str | None = None,
        verify_client: ClientVerifier | None = None,
        verify_client_url: str | None = None,
        verify_client_url_fail_open: bool = False,
        send_queue_depth: int = DEFAULT_SEND_QUEUE_DEPTH,
        keepalive_interval: float = frames.KEEPALIVE_INTERVAL,
        write_timeout: float | None = DEFAULT_WRITE_TIMEOUT,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        reverify_interval: float | None = None,
    ) -> None:
        self._private_key = private_key if isinstance(private_key, NodePrivate) else NodePrivate(private_key)
        self._public_key = self._private_key.public()
        self._mesh_key = DerpMeshKey.from_text(mesh_key) if isinstance(mesh_key, str) else mesh_key
        controller = (
            AdmissionController(verify_client_url, fail_open=verify_client_url_fail_open)
            if verify_client_url
            else None
        )
        self._admission = ClientAdmission(verify_client, controller, reverify_interval)
        self._queue_depth = send_queue_depth
        self._keepalive_interval = keepalive_interval
        self._write_timeout = write_timeout
        self._handshake_timeout = handshake_timeout

        self._clients: dict[bytes, _ClientSet] = {}
        self._watchers: set[ClientConn] = set()
        self._forwarders: dict[bytes, list[PacketForwarder]] = {}
        self._peer_gone_watchers: dict[bytes, set[ClientConn]] = {}
        self._meshes: list[MeshLink] = []
        self._logging_in: set[Conn] = set()
        # Connections whose key is known but not yet registered (being admitted): close_client reaches them.
        self._admitting: dict[bytes, set[Conn]] = {}
        self._batch_buffer = BatchBuffer()
        self._flush_after_read: list[ClientConn] = []
        """Clients given packets by the read being handled, to write to once it is all routed."""
        self._sessions = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self.counters = PacketCounters()

    @property
    def private_key(self) -> NodePrivate:
        return self._private_key

    @property
    def public_key(self) -> NodePublic:
        return self._public_key

    @property
    def mesh_key(self) -> DerpMeshKey | None:
        return self._mesh_key

    @property
    def closed(self) -> bool:
        return self._closed

    def is_client_connected(self, key: NodePublic) -> bool:
        return key in self._clients

    def client_keys(self) -> set[bytes]:
        return set(self._clients)

    def remote_client_keys(self) -> set[bytes]:
        """Keys reachable through mesh peers."""
        return set(self._forwarders)

    def queued_packets(self, key: bytes) -> int:
        """Packets waiting to be written to ``key``'s connections (bounded by the queue depth)."""
        client_set = self._clients.get(key)
        return sum(c.queued_packets for c in client_set.conns) if client_set else 0

    def send_buffer_bytes(self, key: bytes) -> int:
        """Bytes handed to ``key``'s transports and not yet taken by their sockets (bounded too)."""
        client_set = self._clients.get(key)
        return sum(c.conn.send_buffer_size() for c in client_set.conns) if client_set else 0

    def connection_count(self) -> int:
        return sum(len(cs.conns) for cs in self._clients.values())

    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {
            "clients": len(self._clients),
            "connections": self.connection_count(),
            "watchers": len(self._watchers),
            "remote_clients": len(self._forwarders),
            "packets_received": c.received,
            "packets_sent": c.sent,
            "bytes_received": c.bytes_received,
            "bytes_sent": c.bytes_sent,
            "packets_forwarded_in": c.forwarded_in,
            "packets_forwarded_out": c.forwarded_out,
            "drops": c.drops.as_dict(),
        }

    async def accept(self, conn: Conn, *, ideal_node: str | None = None) -> None:
        """Run one client's session over ``conn`` until either side hangs up.

        ``ideal_node`` is the client's Ideal-Node header: present when it would
        rather be on another node of the region.
        """
        self._sessions += 1
        self._idle.clear()
        self._start_reverifier()
        try:
            client = await self._login(conn, not_ideal=bool(ideal_node))
            if client is not None:
                await self._serve(client)
        finally:
            conn.close()
            self._sessions -= 1
            if self._sessions == 0:
                self._idle.set()

    async def _login(self, conn: Conn, *, not_ideal: bool) -> ClientConn | None:
        self._logging_in.add(conn)
        try:
            return await self._handshake(conn, not_ideal=not_ideal)
        finally:
            self._logging_in.discard(conn)

    async def _handshake(self, conn: Conn, *, not_ideal: bool) -> ClientConn | None:
        try:
            async with asyncio.timeout(self._handshake_timeout):
                await conn.write(encode_server_key(self._public_key))
                frame_type, payload = await read_frame(conn, frames.MAX_CLIENT_INFO_LEN)
                key, info = decode_client_info(self._private_key, frame_type, payload)
        except _SESSION_ERRORS as exc:
            log.debug("derp login from %s failed: %s", conn.remote_ip, exc)
            return None
        can_mesh = self._mesh_key is not None and self._mesh_key.matches(info.mesh_key)
        admitting = self._admitting.setdefault(key, set())
        admitting.add(conn)
        try:
            if not can_mesh and not await self._admission.admits(key, conn.remote_ip):
                log.info("derp client %s%s rejected by verification", conn.remote_ip, key.short())
                return None
            if self._closed or conn not in admitting:  # closed by close_client while being admitted
                return None
            try:
                await conn.write(encode_server_info(self._private_key, key, ServerInfo()))
            except _SESSION_ERRORS:
                return None
            if conn not in admitting:
                return None
        finally:
            admitting.discard(conn)
            if not admitting and self._admitting.get(key) is admitting:
                del self._admitting[key]
        return ClientConn(
            conn,
            key,
            info,
            can_mesh=can_mesh,
            not_ideal=not_ideal,
            queue_depth=self._queue_depth,
            keepalive_interval=self._keepalive_interval,
            write_timeout=MESH_WRITE_TIMEOUT if can_mesh else self._write_timeout,
            counters=self.counters,
            on_first_packet_from=self._note_delivery_from,
        )

    async def _serve(self, client: ClientConn) -> None:
        self._register(client)
        writer = asyncio.create_task(client.run_writer(), name=f"derp-writer-{client.label}")
        try:
            await self._read_loop(client)
        except _SESSION_ERRORS as exc:
            if not client.closed:
                log.debug("derp client %s: %s", client.label, exc)
        finally:
            client.close()
            self._unregister(client)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def _read_loop(self, client: ClientConn) -> None:
        """Route every frame the client sends; each read takes all that has arrived, parsed in one pass."""
        conn = client.conn
        reader = frames.FrameReader(frames.MAX_FRAME_SIZE)
        flush = self._flush_after_read
        while True:
            chunk = await conn.read_some()
            if not chunk:
                raise asyncio.IncompleteReadError(b"", reader.buffered + 1)
            try:
                self._route_read(client, reader.feed_spans(chunk))
            finally:
                # One write per destination per read, now, rather than after a turn of each one's writer.
                for recipient in flush:
                    recipient.flush_now()
                flush.clear()

    def _route_read(self, client: ClientConn, spans: Iterator[tuple[int, bytes, int, int]]) -> None:
        """Route the frames of one read.

        The hot path: consecutive SendPacket frames to one destination that can take them now (nothing
        queued for it, room in its socket) are a run, copied once and written as one batch of RecvPacket
        frames, without a Python object per packet.  Every other packet goes through its queue.
        """
        send_packet = FrameType.SEND_PACKET
        largest_send = KEY_LEN + frames.MAX_PACKET_SIZE
        counters = self.counters
        run_to: ClientConn | None = None
        run_buffer = b""
        run_destination = b""
        run_start = run_stop = run_count = 0
        try:
            for frame_type, buffer, start, stop in spans:
                is_send = frame_type == send_packet and KEY_LEN <= stop - start <= largest_send
                if is_send and buffer is run_buffer and buffer.startswith(run_destination, start):
                    run_stop = stop
                    run_count += 1
                    continue
                if run_to is not None:
                    self._deliver_run(client, run_to, run_buffer, run_start, run_stop, run_count)
                    run_to = None
                    run_buffer = b""
                if not is_send:
                    self._handle_frame(client, frame_type, buffer[start:stop])
                    continue
                destination = buffer[start : start + KEY_LEN]
                run_to = self._run_recipient(client, destination)
                if run_to is not None:
                    run_buffer = buffer
                    run_destination = destination
                    run_start = start - frames.FRAME_HEADER_LEN
                    run_stop = stop
                    run_count = 1
                    continue
                data = buffer[start + KEY_LEN : stop]
                counters.received += 1
                counters.bytes_received += len(data)
                self._route(client, destination, data)
        finally:
            if run_to is not None:
                self._deliver_run(client, run_to, run_buffer, run_start, run_stop, run_count)

    def _run_recipient(self, sender: ClientConn, destination: bytes) -> ClientConn | None:
        """The local client packets to ``destination`` can be written straight to now, if any."""
        if sender.duplicate:
            self._make_active(sender)
        local = self._clients.get(destination)
        if local is None:
            return None
        recipient = local.active
        return recipient if recipient.can_take_run(sender.key) else None

    def _deliver_run(
        self, sender: ClientConn, recipient: ClientConn, buffer: bytes, start: int, stop: int, count: int
    ) -> None:
        """Write ``count`` SendPacket frames, ``buffer[start:stop]``, to ``recipient`` in one batch."""
        counters = self.counters
        counters.received += count
        counters.bytes_received += stop - start - count * (frames.FRAME_HEADER_LEN + KEY_LEN)
        recipient.write_run(sender.key, memoryview(buffer)[start:stop], count, self._batch_buffer)

    def _handle_frame(self, client: ClientConn, frame_type: int, payload: bytes) -> None:
        """Every frame but a well-formed SendPacket (the hot path, handled by ``_route_read``)."""
        if frame_type == FrameType.FORWARD_PACKET:
            self._require_mesh(client, "ForwardPacket")
            source, destination, data = frames.decode_forward_packet(payload)
            self._deliver_forwarded(client, source, destination, data)
        elif frame_type == FrameType.SEND_PACKET:
            frames.decode_send_packet(payload)  # only a malformed one comes here: this names what is wrong
        elif frame_type == FrameType.PING:
            client.enqueue_pong(frames.decode_ping(payload))
        elif frame_type == FrameType.NOTE_PREFERRED:
            client.preferred = frames.decode_note_preferred(payload)
        elif frame_type == FrameType.WATCH_CONNS:
            if payload:
                raise ProtocolError("WatchConns frame carries no payload")
            self._require_mesh(client, "WatchConns")
            self._add_watcher(client)
        elif frame_type == FrameType.CLOSE_PEER:
            self._require_mesh(client, "ClosePeer")
            self._close_peer(frames.decode_close_peer(payload))
        # Pong and unknown frame types are ignored, as newer clients may send more.

    @staticmethod
    def _require_mesh(client: ClientConn, what: str) -> None:
        if not client.can_mesh:
            raise ProtocolError(f"{what} requires the mesh key")

    # Routing.

    def _route(self, sender: ClientConn, destination: bytes, data: bytes) -> None:
        if sender.duplicate:
            self._make_active(sender)
        local = self._clients.get(destination)
        if local is not None:
            recipient = local.active
            if recipient.enqueue_packet(sender.key, data):
                self._flush_after_read.append(recipient)
            return
        forwarders = self._forwarders.get(destination)
        if forwarders:
            self.counters.forwarded_out += 1
            forwarders[0].forward_packet(sender.key, destination, data)
            return
        self._drop_unknown(sender, destination, data)

    def _deliver_forwarded(self, via: ClientConn, source: bytes, destination: bytes, data: bytes) -> None:
        """Forwarded packets only go to local clients: never bounce them back into the mesh."""
        local = self._clients.get(destination)
        if local is None:
            self._drop_unknown(via, destination, data)
            return
        self.counters.forwarded_in += 1
        recipient = local.active
        if recipient.enqueue_packet(source, data):
            self._flush_after_read.append(recipient)

    def _drop_unknown(self, sender: ClientConn, destination: bytes, data: bytes) -> None:
        self.counters.drops.unknown_destination += 1
        # Only disco packets earn a reply: that is when the sender is trying to find a path.
        if frames.looks_like_disco(data) and sender.allow_not_here_notice():
            sender.enqueue_frame(frames.encode_peer_gone(destination, PeerGoneReason.NOT_HERE))

    def _present_in_region(self, key: bytes) -> bool:
        return key in self._clients or key in self._forwarders

    def _note_delivery_from(self, recipient: ClientConn, source: bytes) -> None:
        """Remember that ``recipient`` has heard from ``source``, to tell it when ``source`` leaves."""
        if self._present_in_region(source):
            self._peer_gone_watchers.setdefault(source, set()).add(recipient)
        else:
            recipient.enqueue_frame(frames.encode_peer_gone(source, PeerGoneReason.DISCONNECTED))

    def _peer_gone_from_region(self, key: bytes) -> None:
        for recipient in self._peer_gone_watchers.pop(key, ()):
            recipient.senders_seen.discard(key)
            recipient.enqueue_frame(frames.encode_peer_gone(key, PeerGoneReason.DISCONNECTED))

    # Client registry.

    def _register(self, client: ClientConn) -> None:
        existing = self._clients.get(client.key)
        if existing is None:
            self._clients[client.key] = _ClientSet(client)
        else:
            existing.conns.append(client)
            existing.active = client
            for conn in existing.conns:
                if not conn.duplicate:
                    conn.duplicate = True
                    conn.enqueue_frame(frames.encode_health(DUPLICATE_HEALTH_MESSAGE))
        self._broadcast(frames.encode_peer_present(client.key, client.remote_addr, client.present_flags()))

    def _make_active(self, client: ClientConn) -> None:
        """With duplicate connections, the one that last sent is the one that receives."""
        client_set = self._clients.get(client.key)
        if client_set is not None:
            client_set.active = client

    def _unregister(self, client: ClientConn) -> None:
        self._watchers.discard(client)
        for source in client.senders_seen:
            recipients = self._peer_gone_watchers.get(source)
            if recipients is not None:
                recipients.discard(client)
                if not recipients:
                    del self._peer_gone_watchers[source]
        client_set = self._clients.get(client.key)
        if client_set is None or client not in client_set.conns:
            return
        client_set.conns.remove(client)
        if client_set.conns:
            client_set.active = client_set.conns[-1]
            if len(client_set.conns) == 1:
                survivor = client_set.conns[0]
                survivor.duplicate = False
                survivor.enqueue_frame(frames.encode_health(""))
            return
        del self._clients[client.key]
        if client.key not in self._forwarders:
            self._peer_gone_from_region(client.key)
        self._broadcast(frames.encode_peer_gone(client.key, PeerGoneReason.DISCONNECTED))

    def close_client(self, key: NodePublic) -> int:
        """Close every connection of ``key``, those still logging in included (its access was revoked).

        Returns how many were closed.
        """
        admitting = self._admitting.pop(key, set())
        closed = len(admitting)
        for conn in admitting:
            conn.close()
        admitting.clear()  # tells each one's login, should it still be running, that it was closed
        client_set = self._clients.get(key)
        for client in list(client_set.conns) if client_set is not None else ():
            log.info("derp: closing %s: access revoked", client.label)
            client.close()
            closed += 1
        return closed

    def _start_reverifier(self) -> None:
        if not self._closed:
            self._admission.start(self._verified_clients, self._source_of, self.close_client)

    def _verified_clients(self) -> list[NodePublic]:
        """Connected clients that admission asks about again (mesh peers are not nodes of any tailnet)."""
        return [cs.active.key for cs in self._clients.values() if not any(c.can_mesh for c in cs.conns)]

    def _source_of(self, key: NodePublic) -> str | None:
        client_set = self._clients.get(key)
        return None if client_set is None else client_set.active.conn.remote_ip

    def _close_peer(self, key: bytes) -> None:
        client_set = self._clients.get(key)
        if client_set is None:
            return
        for conn in list(client_set.conns):
            log.info("derp: closing %s at a mesh peer's request", conn.label)
            conn.close()

    # Mesh: watchers (peers subscribed to our connection list) and forwarders.

    def _add_watcher(self, client: ClientConn) -> None:
        if client.key == self._public_key:
            return  # our own mesh client dialled us; nothing to learn
        for key, client_set in self._clients.items():
            active = client_set.active
            client.enqueue_frame(frames.encode_peer_present(key, active.remote_addr, active.present_flags()))
        self._watchers.add(client)

    def _broadcast(self, frame: bytes) -> None:
        for watcher in self._watchers:
            watcher.enqueue_frame(frame)

    def add_packet_forwarder(self, key: bytes, forwarder: PacketForwarder) -> None:
        """Route packets for ``key`` (connected to a mesh peer) through ``forwarder``."""
        forwarders = self._forwarders.setdefault(key, [])
        if forwarder not in forwarders:
            forwarders.append(forwarder)

    def remove_packet_forwarder(self, key: bytes, forwarder: PacketForwarder) -> None:
        forwarders = self._forwarders.get(key)
        if forwarders is None or forwarder not in forwarders:
            return
        forwarders.remove(forwarder)
        if forwarders:
            return
        del self._forwarders[key]
        if key not in self._clients:
            self._peer_gone_from_region(key)

    async def start_mesh(self, urls: Iterable[str], *, ssl: Any = None) -> None:
        """Mesh with the DERP servers at ``urls`` (e.g. ``https://derp2.example.com/derp``).

        Our own URL may be in the list; connecting to ourselves is detected
        and ignored.  Links reconnect on their own until :meth:`close`.
        """
        if self._mesh_key is None:
            raise ValueError("meshing requires a mesh key")
        for url in urls:
            link = MeshLink(
                url,
                self._private_key,
                self._mesh_key,
                counters=self.counters,
                on_peer_present=self.add_packet_forwarder,
                on_peer_gone=self.remove_packet_forwarder,
                ssl=ssl,
            )
            self._meshes.append(link)
            link.start()

    @property
    def mesh_links(self) -> list[MeshLink]:
        return list(self._meshes)

    async def close(self, *, restart_notice: tuple[float, float] | None = None, grace: float = 5.0) -> None:
        """Stop meshing and disconnect every client, waiting up to ``grace`` seconds.

        ``restart_notice`` is (reconnect_in, try_for) seconds, sent to clients
        in a Restarting frame before disconnecting them.
        """
        if self._closed:
            return
        self._closed = True
        await self._admission.stop()
        for link in self._meshes:
            await link.close()
        self._meshes.clear()
        connections = [conn for cs in self._clients.values() for conn in cs.conns]
        if restart_notice is not None:
            notice = frames.encode_restarting(*restart_notice)
            for conn in connections:
                conn.enqueue_frame(notice)
            # Give writers a bounded chance to put the notice on the wire before we hang up.
            flushes = [asyncio.ensure_future(conn.flushed()) for conn in connections]
            if flushes:
                _, unflushed = await asyncio.wait(flushes, timeout=min(grace, 1.0))
                for waiter in unflushed:
                    waiter.cancel()
        for conn in connections:
            conn.close()
        for pending in list(self._logging_in):
            pending.close()
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            log.warning("derp: %d sessions still open after close", self._sessions)
        await self._admission.close()
