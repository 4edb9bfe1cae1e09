"""HTTP/2 (prior knowledge, h2c) served over a Noise stream, with the `h2` library as the state machine.

Each request runs as its own task once its body is complete; a long map poll is simply a request whose
response never ends. Response bodies respect the peer's flow-control windows, so a client that stops reading
stalls only its own stream, never the connection's other streams or the server.

What a client can make us hold is bounded (see H2Limits): request bodies still arriving are buffered up to
`connection_buffer` bytes per connection and `BodyBudget.limit` across all connections, and flow control is
not replenished past that, so the client simply cannot send more; a request must be complete within
`request_timeout` of its HEADERS or its stream is reset; a connection with no open request for
`idle_timeout` is closed with GOAWAY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from pyheadscale.control.noise import NoiseError
from pyheadscale.control.noise_stream import NoiseStream

log = logging.getLogger(__name__)

MAX_REQUEST_BODY = 1 << 20
MAX_CONCURRENT_STREAMS = 64
# Decoded headers of one request (h2's default is 64 KiB); a real client's are a few hundred bytes. Headers of
# requests still arriving count against the body buffers too.
MAX_HEADER_LIST_SIZE = 16 << 10
# Streams a client may reset per RESET_WINDOW seconds before the connection is closed: opening and
# cancelling streams at once ("rapid reset") would otherwise cost us a handler task each, with no stream
# limit ever reached.
MAX_CLIENT_RESETS = 200
RESET_WINDOW = 10.0
# What every connection announces in its first SETTINGS frame (and enforces from its first byte).
LOCAL_SETTINGS = {
    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
    h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
}
# One configuration for every connection (h2 only reads it).
H2_CONFIG = h2.config.H2Configuration(
    client_side=False, header_encoding="utf-8", validate_inbound_headers=True
)


class BodyBudget:
    """Bytes of unfinished request bodies held across every connection; over `limit`, no one gets more
    flow-control credit until some is released. Connections starved by it are told when bytes come back."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._starved: set[H2Server] = set()

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit

    def release(self, size: int) -> None:
        self.used -= size
        starved, self._starved = self._starved, set()
        for server in starved:
            server.credit_released()

    def starve(self, server: H2Server) -> None:
        self._starved.add(server)

    def forget(self, server: H2Server) -> None:
        self._starved.discard(server)


@dataclass(slots=True)
class H2Limits:
    """What one connection may hold; `budget` is shared by every connection of the server."""

    budget: BodyBudget = field(default_factory=lambda: BodyBudget(64 << 20))
    connection_buffer: int = 2 << 20
    request_timeout: float = 30.0
    idle_timeout: float = 120.0
    preface_timeout: float | None = None
    # Handed to request parsers (decode), e.g. the Hostinfo size bound.
    parse_context: dict[str, Any] = field(default_factory=dict)


class StreamClosed(Exception):
    """The client reset the stream or the connection went away while a response was being written."""


@dataclass(slots=True)
class InnerRequest:
    """One HTTP/2 request received over the Noise channel."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    response: ResponseStream
    # The client's address as the listener saw it (for per-source limits), and the parsers' bounds.
    source: str = ""
    parse_context: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Pending:
    """A request whose body is still arriving: `unacked` flow-controlled bytes are credit not yet returned."""

    headers: dict[str, str]
    deadline: asyncio.TimerHandle
    header_bytes: int = 0
    body: bytearray = field(default_factory=bytearray)
    unacked: int = 0


class ResponseStream:
    """The response side of one HTTP/2 stream."""

    def __init__(self, server: H2Server, stream_id: int) -> None:
        self._server = server
        self.stream_id = stream_id
        self.started = False
        self.ended = False

    async def start(self, status: int, headers: dict[str, str] | None = None) -> None:
        self._queue_headers(status, headers)
        await self._server.flush()

    def _queue_headers(self, status: int, headers: dict[str, str] | None) -> None:
        items = [(":status", str(status))]
        items += [(k.lower(), v) for k, v in (headers or {}).items()]
        self._server.send_headers(self.stream_id, items, end_stream=False)
        self.started = True

    async def send(self, data: bytes, *, end: bool = False) -> None:
        await self._server.send_data(self.stream_id, data, end=end)
        self.ended = end

    def send_nowait(self, data: bytes) -> bool:
        """`data` as one DATA frame written at once, when that needs no waiting (H2Server.send_data_nowait);
        False, with nothing sent, otherwise."""
        return self._server.send_data_nowait(self.stream_id, data)

    async def finish(self) -> None:
        if not self.ended:
            await self.send(b"", end=True)

    async def respond(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        """A whole response. Its HEADERS go out with the first DATA, in one Noise record and one write."""
        self._queue_headers(status, {"content-type": content_type, "content-length": str(len(body))})
        await self.send(body, end=True)


Handler = Callable[[InnerRequest], Awaitable[None]]


class H2Server:
    """Serves one HTTP/2 connection over a NoiseStream until either side ends it."""

    def __init__(
        self, stream: NoiseStream, handler: Handler, limits: H2Limits | None = None, *, source: str = ""
    ) -> None:
        self._limits = limits or H2Limits()
        self._source = source
        self._buffered = 0
        self._idle_since = time.monotonic()
        self._reset_window_start = self._idle_since
        self._resets = 0
        self._stream = stream
        self._handler = handler
        self._conn = h2.connection.H2Connection(config=H2_CONFIG)
        # Our settings in the connection's first SETTINGS frame rather than a second one after h2's defaults:
        # one frame less to write, and to acknowledge, per connection.
        self._conn.local_settings = h2.settings.Settings(client=False, initial_values=LOCAL_SETTINGS)
        self._conn.decoder.max_header_list_size = MAX_HEADER_LIST_SIZE
        self._pending: dict[int, _Pending] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._idle_waiter: asyncio.Future[None] | None = None  # woken when the last open request ends
        self._background: set[asyncio.Task[None]] = set()
        self._window_open = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._closed = False

    async def serve(self) -> None:
        self._conn.initiate_connection()
        read: asyncio.Task[bytes] | None = None
        try:
            await self.flush()
            # A client sends its HTTP/2 preface right after the handshake; one that sends nothing is not let
            # hold a connection open forever.
            read = asyncio.ensure_future(self._stream.read())
            done, _ = await asyncio.wait({read}, timeout=self._limits.preface_timeout)
            if not done:
                log.info(
                    "closing control connection: no HTTP/2 preface within %ss", self._limits.preface_timeout
                )
                return
            while not self._closed:
                data = read.result()
                if not data:
                    break
                try:
                    events = self._conn.receive_data(data)
                except (h2.exceptions.ProtocolError, UnicodeDecodeError) as exc:
                    # UnicodeDecodeError: h2 decodes header values as UTF-8 and lets a bad byte through.
                    log.info("closing control connection after HTTP/2 protocol error: %s", exc)
                    await self.flush()
                    break
                for event in events:
                    self._on_event(event)
                await self.flush()
                if self._closed:
                    break
                read = asyncio.ensure_future(self._stream.read())
                if not await self._wait_while_busy(read):
                    log.info("closing control connection: idle for %ss", self._limits.idle_timeout)
                    self._conn.close_connection()
                    await self.flush()
                    break
        except (NoiseError, ConnectionError, StreamClosed) as exc:
            log.info("control connection ended: %s", exc)
        finally:
            self._closed = True
            self._window_open.set()
            self._limits.budget.forget(self)
            if read is not None and not read.done():
                read.cancel()
            for stream_id in list(self._pending):
                self._drop_pending(stream_id)
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if read is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await read

    async def _wait_while_busy(self, read: asyncio.Task[bytes]) -> bool:
        """Wait for `read`; False when the connection had no open request for idle_timeout first.

        While a request is open (a map poll stays open for as long as the node is up) there is nothing to
        time, so no timer is armed: ten thousand map streams would otherwise each wake once an idle_timeout
        only to find themselves busy. The last request to end wakes this wait (`_note_if_idle`) to start the
        clock.
        """
        loop = asyncio.get_running_loop()
        while True:
            if self._pending or self._tasks:
                now_idle = self._idle_waiter = loop.create_future()
                try:
                    await asyncio.wait({read, now_idle}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    self._idle_waiter = None
                    now_idle.cancel()
                if read.done():
                    return True
                continue
            timeout = self._limits.idle_timeout - (time.monotonic() - self._idle_since)
            if timeout <= 0:
                return False
            done, _ = await asyncio.wait({read}, timeout=timeout)
            if done:
                return True

    def _note_if_idle(self) -> None:
        """A request ended: with none left open, the idle clock starts now."""
        if not self._pending and not self._tasks:
            self._idle_since = time.monotonic()
            if self._idle_waiter is not None and not self._idle_waiter.done():
                self._idle_waiter.set_result(None)

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            headers = {str(k): str(v) for k, v in (event.headers or [])}
            deadline = asyncio.get_running_loop().call_later(
                self._limits.request_timeout, self._request_timed_out, event.stream_id
            )
            size = sum(len(k) + len(v) + 32 for k, v in headers.items())  # RFC 9113's header list size
            self._pending[event.stream_id] = _Pending(headers, deadline, size)
            self._buffered += size
            self._limits.budget.used += size
        elif isinstance(event, h2.events.DataReceived):
            self._on_data(event)
        elif isinstance(event, h2.events.StreamEnded):
            pending = self._take_pending(event.stream_id)
            if pending is not None:
                self._dispatch(event.stream_id, pending)
        elif isinstance(event, h2.events.StreamReset):
            if event.remote_reset:
                self._count_reset()
            self._drop_pending(event.stream_id)
            task = self._tasks.get(event.stream_id)
            if task is not None:
                task.cancel()
            self._window_open.set()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._window_open.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._closed = True

    def _count_reset(self) -> None:
        now = time.monotonic()
        if now - self._reset_window_start > RESET_WINDOW:
            self._reset_window_start, self._resets = now, 0
        self._resets += 1
        if self._resets > MAX_CLIENT_RESETS:
            log.info(
                "closing control connection: more than %d streams reset in %ss",
                MAX_CLIENT_RESETS,
                RESET_WINDOW,
            )
            self._conn.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            self._closed = True

    def _on_data(self, event: h2.events.DataReceived) -> None:
        stream_id, size = event.stream_id, event.flow_controlled_length or 0
        pending = self._pending.get(stream_id)
        if pending is None:  # a stream we already refused: its bytes are not ours to hold
            self._conn.acknowledge_received_data(size, stream_id)
            return
        data = event.data or b""
        pending.body += data
        pending.unacked += size
        self._buffered += len(data)
        self._limits.budget.used += len(data)
        if len(pending.body) > MAX_REQUEST_BODY:
            self._drop_pending(stream_id)
            self._conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        self._grant_credit()

    def _grant_credit(self) -> None:
        """Return flow-control credit to streams still sending, as far as the buffers allow."""
        budget = self._limits.budget
        for stream_id, pending in self._pending.items():
            if self._buffered >= self._limits.connection_buffer:
                return
            if budget.exhausted:
                budget.starve(self)
                return
            if pending.unacked:
                self._conn.acknowledge_received_data(pending.unacked, stream_id)
                pending.unacked = 0

    def credit_released(self) -> None:
        """The shared budget has room again: grant what we held back and send the WINDOW_UPDATEs."""
        if self._closed:
            return
        self._grant_credit()
        self._flush_soon()

    def _flush_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self._quiet_flush())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _quiet_flush(self) -> None:
        with contextlib.suppress(StreamClosed):
            await self.flush()

    def _take_pending(self, stream_id: int) -> _Pending | None:
        """Remove a pending request, releasing its buffered bytes and the credit held back for it."""
        pending = self._pending.pop(stream_id, None)
        if pending is None:
            return None
        pending.deadline.cancel()
        held = len(pending.body) + pending.header_bytes
        self._buffered -= held
        if pending.unacked and not self._closed:
            self._conn.acknowledge_received_data(pending.unacked, stream_id)
            pending.unacked = 0
        self._note_if_idle()
        self._limits.budget.release(held)
        if not self._closed:
            self._grant_credit()
        return pending

    def _drop_pending(self, stream_id: int) -> None:
        pending = self._take_pending(stream_id)
        if pending is not None:
            pending.body = bytearray()

    def _request_timed_out(self, stream_id: int) -> None:
        if stream_id not in self._pending or self._closed:
            return
        log.info(
            "resetting control stream %d: request not complete within %ss",
            stream_id,
            self._limits.request_timeout,
        )
        self._drop_pending(stream_id)
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self._flush_soon()

    def _dispatch(self, stream_id: int, pending: _Pending) -> None:
        target = urlsplit(pending.headers.get(":path", "/"))
        response = ResponseStream(self, stream_id)
        request = InnerRequest(
            method=pending.headers.get(":method", "GET").upper(),
            path=target.path,
            query=parse_qs(target.query),
            headers={k: v for k, v in pending.headers.items() if not k.startswith(":")},
            body=bytes(pending.body),
            response=response,
            source=self._source,
            parse_context=self._limits.parse_context,
        )
        task = asyncio.get_running_loop().create_task(self._run(request))
        self._tasks[stream_id] = task

    async def _run(self, request: InnerRequest) -> None:
        stream_id = request.response.stream_id
        try:
            await self._handler(request)
            if not request.response.started:
                await request.response.respond(500, b"handler wrote no response", "text/plain")
            else:
                await request.response.finish()
        except (StreamClosed, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("handler for %s %.200s failed", request.method, request.path)
            with contextlib.suppress(Exception):
                if not request.response.started:
                    await request.response.respond(500, b"internal error", "text/plain")
                else:
                    self._conn.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
                    await self.flush()
        finally:
            self._tasks.pop(stream_id, None)
            self._note_if_idle()

    def send_headers(self, stream_id: int, headers: list[tuple[str, str]], *, end_stream: bool) -> None:
        try:
            self._conn.send_headers(stream_id, headers, end_stream=end_stream)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as exc:
            raise StreamClosed(str(exc)) from exc

    async def send_data(self, stream_id: int, data: bytes, *, end: bool) -> None:
        """Send `data` as DATA frames, as fast as the peer's flow-control windows allow.

        Every frame the windows allow is queued before one flush, so a large body (a full map is one frame per
        16 KiB) is sealed and written in one go rather than one write per frame.
        """
        view = memoryview(data)
        while True:
            if self._closed:
                raise StreamClosed("connection closed")
            try:
                window = self._conn.local_flow_control_window(stream_id)
                if window <= 0 and view:
                    self._window_open.clear()
                    await self.flush()
                    await self._window_open.wait()
                    continue
                frame_size = self._conn.max_outbound_frame_size
                while True:  # at least once: an empty body still needs its (END_STREAM) frame
                    size = min(window, frame_size, len(view))
                    chunk, view = view[:size], view[size:]
                    self._conn.send_data(stream_id, bytes(chunk), end_stream=end and not view)
                    window -= size
                    if not view or window <= 0:
                        break
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError) as exc:
                raise StreamClosed(str(exc)) from exc
            await self.flush()
            if not view:
                return

    def send_data_nowait(self, stream_id: int, data: bytes) -> bool:
        """Send `data` as one DATA frame and write it out at once, when nothing has to wait: the windows and
        the frame size allow it, no flush is under way and the transport has room. False, with nothing sent,
        otherwise. Keep-alives go this way, with no task switch and no lock (pyheadscale.control.keepalive).

        Whatever h2 has queued goes out with it, in order: a flush under way would hold the lock, and one
        waiting for it finds less to write.
        """
        if self._closed or self._flush_lock.locked() or not self._stream.writable_now():
            return False
        conn = self._conn
        try:
            if len(data) > min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size):
                return False
            conn.send_data(stream_id, data)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError) as exc:
            raise StreamClosed(str(exc)) from exc
        try:
            self._stream.write_nowait(conn.data_to_send())
        except (ConnectionError, NoiseError) as exc:
            self._closed = True
            raise StreamClosed(str(exc)) from exc
        return True

    async def flush(self) -> None:
        async with self._flush_lock:
            data = self._conn.data_to_send()
            if data:
                try:
                    await self._stream.write(data)
                except (ConnectionError, NoiseError) as exc:
                    self._closed = True
                    raise StreamClosed(str(exc)) from exc
