"""One logged-in client connection as the server sees it: its queues and its writer.

Packets for a client are queued without ever blocking the sender's reader;
when a client falls behind, the oldest queued packet is dropped so fresher
ones get through (WireGuard recovers from loss far better than from delay).
Disco packets, which set up direct paths, have their own queue so bulk data
cannot starve them.  A single writer task drains the queues, batching
whatever is ready into one socket write.  When nothing is queued and the
socket has room, the server skips the queues: a run of packets from one read
is written at once (``write_run``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from derp import frames
from derp.conn import Conn
from derp.handshake import ClientInfo
from pyheadscale.tailkey import NodePublic

log = logging.getLogger(__name__)

MAX_WRITE_BATCH = 256 << 10
"""Bytes gathered into one socket write before yielding to the event loop."""

MAX_PENDING_PONGS = 4
"""Pongs owed beyond this are dropped: a client pinging that fast is misbehaving."""

NOT_HERE_NOTICES_PER_SECOND = 1.0
NOT_HERE_NOTICE_BURST = 3.0
"""Bounds on PeerGone(NotHere) replies, so a client spraying unknown keys can't make us echo a flood."""


@dataclass(slots=True)
class DropCounters:
    """Why packets were not delivered, for stats and tests."""

    queue_head: int = 0
    unknown_destination: int = 0
    gone: int = 0
    write_error: int = 0
    forward_queue_full: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class PacketCounters:
    received: int = 0
    sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    forwarded_in: int = 0
    forwarded_out: int = 0
    drops: DropCounters = field(default_factory=DropCounters)


class BatchBuffer:
    """Scratch space a relay builds write batches in, reused while the transports take each batch whole.

    A fresh buffer of a few hundred KiB per batch costs more than copying into it (the allocator maps and
    faults in new pages each time); once a transport keeps part of a batch to send later, that buffer is
    left to it and the next batch gets a new one.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def fill(self, data: memoryview) -> memoryview:
        """A view of scratch space holding a copy of ``data``; hand it back to ``written``."""
        if len(self._buffer) < len(data):
            self._buffer = bytearray(len(data))
        batch = memoryview(self._buffer)[: len(data)]
        batch[:] = data
        return batch

    def written(self, *, taken_whole: bool) -> None:
        """The last batch went to a transport: reuse its space only if the transport kept none of it.

        (The space is never resized, only replaced, so views a transport may still hold stay valid.)
        """
        if not taken_whole:
            self._buffer = bytearray()


class ClientConn:
    """A client's connection: identity, send queues and the writer task."""

    def __init__(
        self,
        conn: Conn,
        key: NodePublic,
        info: ClientInfo,
        *,
        can_mesh: bool,
        not_ideal: bool,
        queue_depth: int,
        keepalive_interval: float,
        write_timeout: float | None,
        counters: PacketCounters,
        on_first_packet_from: Callable[[ClientConn, bytes], None],
    ) -> None:
        self.conn = conn
        self.key = key
        self.info = info
        self.can_mesh = can_mesh
        self.not_ideal = not_ideal
        self.remote_addr = conn.remote_addr
        self.preferred = False
        self.duplicate = False
        """Whether the same key has another live connection to this server."""
        self.label = f"{conn.remote_ip}{key.short()}"
        self.senders_seen: set[bytes] = set()
        """Sources whose packets we delivered here; they get PeerGone when those sources leave."""

        self._queue_depth = queue_depth
        self._packets: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._disco: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._control: collections.deque[bytes] = collections.deque()
        self._pending_pongs = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        """Set while nothing is queued or being written."""
        self._idle.set()
        self._closed = False
        self._keepalive_interval = keepalive_interval
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._write_timeout = write_timeout
        self._counters = counters
        self._on_first_packet_from = on_first_packet_from
        self._not_here_tokens = NOT_HERE_NOTICE_BURST
        self._not_here_refilled_at = asyncio.get_running_loop().time()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued_packets(self) -> int:
        return len(self._packets) + len(self._disco)

    def present_flags(self) -> frames.PeerPresentFlags:
        flags = frames.PeerPresentFlags.IS_REGULAR
        if self.can_mesh:
            flags |= frames.PeerPresentFlags.IS_MESH_PEER
        if self.info.is_prober:
            flags |= frames.PeerPresentFlags.IS_PROBER
        if self.not_ideal:
            flags |= frames.PeerPresentFlags.NOT_IDEAL
        return flags

    def enqueue_packet(self, source: bytes, data: bytes) -> bool:
        """Queue a packet for delivery. Never blocks.

        A full queue is first written out to the socket if it has room; only
        when the socket is backed up too is the oldest packet dropped, so the
        server never holds more than a queue and a bounded send buffer per client.
        True when the queue was idle until now: the caller should ``flush_now``
        once it has queued the rest of what it read, rather than leave the
        packets to wait for the writer task's turn.
        """
        if self._closed:
            self._counters.drops.gone += 1
            return False
        queue = self._disco if frames.looks_like_disco(data) else self._packets
        if len(queue) >= self._queue_depth:
            if self.conn.has_room():
                self.flush_now()
            else:
                queue.popleft()
                self._counters.drops.queue_head += 1
        queue.append((source, data))
        if self._idle.is_set():
            self._idle.clear()
            self._wake.set()
            return True
        return False

    def can_take_run(self, source: bytes) -> bool:
        """Whether a run of packets from ``source`` may be written straight to the socket, past the queues.

        Only when nothing is queued (so nothing is overtaken) and the socket has room: then a queue would be
        written out at once anyway.
        """
        if self._closed or self._packets or self._disco or self._control or not self.conn.has_room():
            return False
        if source not in self.senders_seen:
            self.senders_seen.add(source)
            self._on_first_packet_from(self, source)
            return not self._control  # a notice it queued goes first
        return True

    def write_run(self, source: bytes, send_frames: memoryview, count: int, scratch: BatchBuffer) -> None:
        """Deliver ``count`` whole SendPacket frames from ``source``, back to back in ``send_frames``, in one
        write; only after ``can_take_run`` said yes.  They are copied once, into ``scratch``, and rewritten
        there as RecvPacket frames.
        """
        batch = scratch.fill(send_frames)
        frames.rewrite_as_recv_packets(batch, source)
        self.conn.write_nowait(batch)
        scratch.written(taken_whole=not self.conn.send_buffer_size())
        self._counters.sent += count
        self._counters.bytes_sent += len(send_frames) - count * (frames.FRAME_HEADER_LEN + len(source))

    def enqueue_frame(self, frame: bytes) -> None:
        """Queue an already-encoded control frame (PeerGone, PeerPresent, Health...)."""
        if self._closed:
            return
        self._control.append(frame)
        self._idle.clear()
        self._wake.set()

    def enqueue_pong(self, data: bytes) -> None:
        if self._pending_pongs >= MAX_PENDING_PONGS:
            return
        self._pending_pongs += 1
        self.enqueue_frame(frames.encode_pong(data))

    def allow_not_here_notice(self) -> bool:
        """Token bucket deciding whether to tell this client a destination is unknown."""
        now = asyncio.get_running_loop().time()
        elapsed = now - self._not_here_refilled_at
        self._not_here_refilled_at = now
        self._not_here_tokens = min(
            NOT_HERE_NOTICE_BURST, self._not_here_tokens + elapsed * NOT_HERE_NOTICES_PER_SECOND
        )
        if self._not_here_tokens < 1:
            return False
        self._not_here_tokens -= 1
        return True

    def close(self) -> None:
        """Stop the writer and close the connection; the reader then sees EOF."""
        if self._closed:
            return
        self._closed = True
        self._counters.drops.gone += len(self._packets) + len(self._disco)
        self._packets.clear()
        self._disco.clear()
        self._control.clear()
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        self._wake.set()
        self._idle.set()
        self.conn.close()

    def _arm_keepalive(self) -> None:
        # Jitter spreads keepalives of clients that connected together.
        delay = self._keepalive_interval * (1 + random.random() / 12)
        self._keepalive_timer = asyncio.get_running_loop().call_later(delay, self._on_keepalive)

    def _on_keepalive(self) -> None:
        self.enqueue_frame(frames.encode_keep_alive())
        if not self._closed:
            self._arm_keepalive()

    def flush_now(self) -> None:
        """Write what is queued straight to the socket while it has room, without waiting for the writer."""
        conn = self.conn
        while not self._closed and conn.has_room():
            batch = self._take_batch()
            if not batch:
                self._idle.set()  # everything is with the transport: the next packet flushes again
                return
            conn.write_nowait(batch)

    def _take_batch(self) -> bytes:
        """Gather ready frames into one write: control first, then disco, then data packets."""
        parts: list[bytes] = []
        size = 0
        while self._control and size < MAX_WRITE_BATCH:
            frame = self._control.popleft()
            if frame[0] == frames.FrameType.PONG:
                self._pending_pongs -= 1
            parts.append(frame)
            size += len(frame)
        sent = 0
        data_bytes = 0
        senders_seen = self.senders_seen
        header = frames.recv_packet_header
        append = parts.append
        for queue in (self._disco, self._packets):
            while queue and size < MAX_WRITE_BATCH:
                source, data = queue.popleft()
                if source not in senders_seen:
                    senders_seen.add(source)
                    self._on_first_packet_from(self, source)
                append(header(len(data)))
                append(source)
                append(data)
                sent += 1
                data_bytes += len(data)
                size += frames.FRAME_HEADER_LEN + len(source) + len(data)
        self._counters.sent += sent
        self._counters.bytes_sent += data_bytes
        return b"".join(parts)

    async def run_writer(self) -> None:
        """Drain the queues to the socket until the connection closes."""
        self._arm_keepalive()
        try:
            while not self._closed:
                await self._wake.wait()
                self._wake.clear()
                while not self._closed:
                    batch = self._take_batch()
                    if not batch:
                        self._idle.set()
                        break
                    async with asyncio.timeout(self._write_timeout):
                        await self.conn.write(batch)
        except TimeoutError:
            log.info("derp client %s: write timed out; closing", self.label)
        except ConnectionError as exc:
            log.debug("derp client %s: write failed: %s", self.label, exc)
        except Exception:
            log.exception("derp client %s: writer crashed", self.label)
        finally:
            self.close()

    async def flushed(self) -> None:
        """Wait until everything queued so far has been handed to the transport (or we closed)."""
        await self._idle.wait()
