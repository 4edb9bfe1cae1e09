"""HTTP/2 (prior knowledge, h2c) served over a Noise stream, with the `h2` library as the state machine.

Each request runs as its own task once its body is complete; a long map poll is simply a request whose
response never ends. Response bodies respect the peer's flow-control windows, so a client that stops reading
stalls only its own stream, never the connection's other streams or the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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


@dataclass(slots=True)
class _Pending:
    headers: dict[str, str]
    body: bytearray = field(default_factory=bytearray)


class ResponseStream:
    """The response side of one HTTP/2 stream."""

    def __init__(self, server: H2Server, stream_id: int) -> None:
        self._server = server
        self.stream_id = stream_id
        self.started = False
        self.ended = False

    async def start(self, status: int, headers: dict[str, str] | None = None) -> None:
        items = [(":status", str(status))]
        items += [(k.lower(), v) for k, v in (headers or {}).items()]
        self._server.send_headers(self.stream_id, items, end_stream=False)
        self.started = True
        await self._server.flush()

    async def send(self, data: bytes, *, end: bool = False) -> None:
        await self._server.send_data(self.stream_id, data, end=end)
        self.ended = end

    async def finish(self) -> None:
        if not self.ended:
            await self.send(b"", end=True)

    async def respond(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        await self.start(status, {"content-type": content_type, "content-length": str(len(body))})
        await self.send(body, end=True)


Handler = Callable[[InnerRequest], Awaitable[None]]


class H2Server:
    """Serves one HTTP/2 connection over a NoiseStream until either side ends it."""

    def __init__(
        self, stream: NoiseStream, handler: Handler, *, preface_timeout: float | None = None
    ) -> None:
        self._preface_timeout = preface_timeout
        self._stream = stream
        self._handler = handler
        config = h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8", validate_inbound_headers=True
        )
        self._conn = h2.connection.H2Connection(config=config)
        self._pending: dict[int, _Pending] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._window_open = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._closed = False

    async def serve(self) -> None:
        self._conn.initiate_connection()
        self._conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS})
        try:
            await self.flush()
            # A client sends its HTTP/2 preface right after the handshake; one that sends nothing is not let
            # hold a connection open forever.
            try:
                data = await asyncio.wait_for(self._stream.read(), self._preface_timeout)
            except TimeoutError:
                log.info("closing control connection: no HTTP/2 preface within %ss", self._preface_timeout)
                return
            while not self._closed:
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
                data = await self._stream.read()
        except (NoiseError, ConnectionError, StreamClosed) as exc:
            log.info("control connection ended: %s", exc)
        finally:
            self._closed = True
            self._window_open.set()
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            headers = {str(k): str(v) for k, v in (event.headers or [])}
            self._pending[event.stream_id] = _Pending(headers)
        elif isinstance(event, h2.events.DataReceived):
            pending = self._pending.get(event.stream_id)
            self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if pending is None:
                return
            pending.body += event.data or b""
            if len(pending.body) > MAX_REQUEST_BODY:
                del self._pending[event.stream_id]
                self._conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        elif isinstance(event, h2.events.StreamEnded):
            pending = self._pending.pop(event.stream_id, None)
            if pending is not None:
                self._dispatch(event.stream_id, pending)
        elif isinstance(event, h2.events.StreamReset):
            self._pending.pop(event.stream_id, None)
            task = self._tasks.get(event.stream_id)
            if task is not None:
                task.cancel()
            self._window_open.set()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._window_open.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._closed = True

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
            log.exception("handler for %s %s failed", request.method, request.path)
            with contextlib.suppress(Exception):
                if not request.response.started:
                    await request.response.respond(500, b"internal error", "text/plain")
                else:
                    self._conn.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
                    await self.flush()
        finally:
            self._tasks.pop(stream_id, None)

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

    async def flush(self) -> None:
        async with self._flush_lock:
            data = self._conn.data_to_send()
            if data:
                try:
                    await self._stream.write(data)
                except (ConnectionError, NoiseError) as exc:
                    self._closed = True
                    raise StreamClosed(str(exc)) from exc
