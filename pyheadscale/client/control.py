"""A TS2021 client of our own: the client side of /key, the upgrade, Noise, HTTP/2, register and map polls.

Tests use it to drive the server byte-exactly as a Tailscale client does, and load benchmarks use it to
simulate thousands of nodes from one process (each node is one TCP connection and a few coroutines).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import struct
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import h2.config
import h2.connection
import h2.events

from pyheadscale.control import noise
from pyheadscale.control.noise_stream import NoiseStream
from pyheadscale.control.ts2021 import EARLY_PAYLOAD_MAGIC, HANDSHAKE_HEADER, UPGRADE_PROTOCOL
from pyheadscale.control.ws_bytes import WebSocketBytes
from pyheadscale.tailcfg.frame import FrameDecoder, FrameError
from pyheadscale.tailkey import DiscoPublic, MachinePrivate, MachinePublic, NodePrivate

DEFAULT_CAPVER = 130
# A server's early payload is one small JSON object (the node key challenge).
MAX_EARLY_PAYLOAD = 64 * 1024


class ControlClientError(Exception):
    pass


@dataclass
class _Stream:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    data: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    headers_ready: asyncio.Event = field(default_factory=asyncio.Event)
    reset: bool = False


def _open(base_url: str, tls: ssl.SSLContext | None, local_host: str | None = None) -> Any:
    """A connection to the server: TLS (with `tls`, or the system's trust) for an https:// URL; from
    `local_host` when given."""
    parts = urlsplit(base_url)
    local_addr = (local_host, 0) if local_host else None
    if parts.scheme == "https":
        context = tls or ssl.create_default_context()
        return asyncio.open_connection(parts.hostname, parts.port or 443, ssl=context, local_addr=local_addr)
    return asyncio.open_connection(parts.hostname, parts.port or 80, local_addr=local_addr)


async def fetch_server_key(
    base_url: str, capver: int = DEFAULT_CAPVER, *, tls: ssl.SSLContext | None = None
) -> MachinePublic:
    """`GET /key?v=N` over HTTP/1.1 (TLS for https://), returning the server's Noise public key."""
    parts = urlsplit(base_url)
    reader, writer = await _open(base_url, tls)
    try:
        writer.write(
            f"GET /key?v={capver} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()
        )
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise ControlClientError(f"/key answered {head[:40]!r}")
    return MachinePublic.from_text(json.loads(body)["publicKey"])


async def read_early_payload(read: Callable[[], Awaitable[bytes]]) -> tuple[dict[str, Any], bytes]:
    """The early payload from Noise frames `read` returns, and the HTTP/2 bytes that followed it.

    Its magic, length and JSON may arrive in one frame (pyheadscale writes them at once) or in several
    (Headscale writes each part on its own), so the header is gathered before it is read.
    """
    data = b""
    while len(data) < len(EARLY_PAYLOAD_MAGIC):
        chunk = await read()
        if not chunk:
            raise ControlClientError("connection closed before the early payload")
        data += chunk
    if not data.startswith(EARLY_PAYLOAD_MAGIC):
        raise ControlClientError("server sent no early payload")
    header = len(EARLY_PAYLOAD_MAGIC) + 4
    while len(data) < header:
        chunk = await read()
        if not chunk:
            raise ControlClientError("connection closed inside the early payload")
        data += chunk
    (length,) = struct.unpack(">I", data[len(EARLY_PAYLOAD_MAGIC) : header])
    if length > MAX_EARLY_PAYLOAD:
        raise ControlClientError(f"early payload of {length} bytes is over {MAX_EARLY_PAYLOAD}")
    while len(data) < header + length:
        chunk = await read()
        if not chunk:
            raise ControlClientError("connection closed inside the early payload")
        data += chunk
    return json.loads(data[header : header + length]), data[header + length :]


async def _finish_handshake(
    initiator: noise.Initiator, read_exactly: Callable[[int], Awaitable[bytes]]
) -> noise.Session:
    """Read the server's handshake response frame (or its refusal) and complete the handshake."""
    header = await read_exactly(noise.HEADER_LEN)
    (length,) = struct.unpack(">H", header[1:3])
    return initiator.finish(header + await read_exactly(length))


class ControlClient:
    """One Noise + HTTP/2 connection to the control server, as one machine."""

    def __init__(
        self,
        base_url: str,
        machine_key: MachinePrivate,
        *,
        capver: int = DEFAULT_CAPVER,
        tls: ssl.SSLContext | None = None,
        local_host: str | None = None,
    ) -> None:
        """`local_host` binds the connection's source address (benchmarks simulate many sources on
        127.0.0.0/8)."""
        self.base_url = base_url
        self.tls = tls
        self.local_host = local_host
        self.machine_key = machine_key
        self.capver = capver
        self.early_payload: dict[str, Any] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._stream: NoiseStream | None = None
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self._streams: dict[int, _Stream] = {}
        self._reader_task: asyncio.Task[None] | None = None
        self._window = asyncio.Event()
        self._closed = asyncio.Event()
        self._pending_h2 = b""
        self._http: aiohttp.ClientSession | None = None

    @property
    def machine_key_text(self) -> str:
        return self.machine_key.public().text

    @property
    def closed(self) -> bool:
        """Whether the connection is gone or going (the server sent GOAWAY): a new request needs a new one."""
        return self._closed.is_set() or self._h2.state_machine.state is h2.connection.ConnectionState.CLOSED

    async def connect(self, server_public: MachinePublic | None = None, *, websocket: bool = False) -> None:
        """Upgrade with HTTP/1.1 as tailscaled does, or (`websocket`) as browser and WASM clients do."""
        if server_public is None:
            server_public = await fetch_server_key(self.base_url, self.capver, tls=self.tls)
        if websocket:
            await self._connect_websocket(server_public)
            return
        parts = urlsplit(self.base_url)
        reader, writer = await _open(self.base_url, self.tls, self.local_host)
        self._writer = writer
        initiator = noise.Initiator(self.machine_key, server_public, self.capver)
        init = base64.b64encode(initiator.initiation()).decode()
        writer.write(
            f"POST /ts2021 HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: {UPGRADE_PROTOCOL}\r\n"
            f"Connection: upgrade\r\n{HANDSHAKE_HEADER}: {init}\r\nContent-Length: 0\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            rest = await reader.read(4096)
            raise ControlClientError(f"upgrade refused: {(head + rest)[:200]!r}")
        session = await _finish_handshake(initiator, reader.readexactly)

        async def write(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        async def read_some() -> bytes:
            return await reader.read(1 << 16)

        self._stream = NoiseStream(session, read_some, write)
        await self._read_early_payload()
        self._h2.initiate_connection()
        await self._flush()
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())

    async def _connect_websocket(self, server_public: MachinePublic) -> None:
        parts = urlsplit(self.base_url)
        initiator = noise.Initiator(self.machine_key, server_public, self.capver)
        init = quote(base64.b64encode(initiator.initiation()).decode(), safe="")
        scheme = "wss" if parts.scheme == "https" else "ws"
        self._http = aiohttp.ClientSession()
        try:
            ws = await self._http.ws_connect(
                f"{scheme}://{parts.netloc}/ts2021?{HANDSHAKE_HEADER}={init}",
                protocols=[UPGRADE_PROTOCOL],
                ssl=self.tls if self.tls is not None else True,
            )
        except aiohttp.ClientError as exc:
            raise ControlClientError(f"websocket upgrade refused: {exc}") from exc

        async def receive() -> bytes | None:
            message = await ws.receive()
            return bytes(message.data) if message.type is aiohttp.WSMsgType.BINARY else None

        transport = WebSocketBytes(receive, ws.send_bytes)
        session = await _finish_handshake(initiator, transport.read_exactly)
        self._stream = NoiseStream(session, transport.read_some, transport.write)
        self._h2.initiate_connection()
        await self._flush()
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())

    async def _read_early_payload(self) -> None:
        assert self._stream is not None
        self.early_payload, self._pending_h2 = await read_early_payload(self._stream.read)

    async def _read_loop(self) -> None:
        assert self._stream is not None
        try:
            pending, self._pending_h2 = self._pending_h2, b""
            while True:
                data = pending or await self._stream.read()
                pending = b""
                if not data:
                    break
                for event in self._h2.receive_data(data):
                    self._on_event(event)
                await self._flush()
        except (noise.NoiseError, ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            self._closed.set()
            self._window.set()
            for stream in self._streams.values():
                stream.headers_ready.set()
                stream.data.put_nowait(None)

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self._streams[event.stream_id]
            headers = {str(k): str(v) for k, v in (event.headers or [])}
            stream.status = int(headers.pop(":status", "0"))
            stream.headers = headers
            stream.headers_ready.set()
        elif isinstance(event, h2.events.DataReceived):
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self._streams[event.stream_id].data.put_nowait(event.data or b"")
        elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
            ended = self._streams.get(event.stream_id)
            if ended is not None:
                ended.reset = isinstance(event, h2.events.StreamReset)
                ended.headers_ready.set()
                ended.data.put_nowait(None)
            self._window.set()  # a sender waiting on this stream's window must see it is gone
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._window.set()

    async def _flush(self) -> None:
        assert self._stream is not None
        data = self._h2.data_to_send()
        if data:
            await self._stream.write(data)

    async def _open(self, method: str, path: str, body: bytes) -> tuple[int, _Stream]:
        stream_id = self._h2.get_next_available_stream_id()
        stream = _Stream()
        self._streams[stream_id] = stream
        parts = urlsplit(self.base_url)
        self._h2.send_headers(
            stream_id,
            [
                (":method", method),
                (":path", path),
                (":scheme", "http"),
                (":authority", parts.netloc),
                ("content-type", "application/json"),
                ("content-length", str(len(body))),
            ],
        )
        view = memoryview(body)
        # The server may refuse the stream (reset, or an error status) before the body is all sent: stop then.
        while view and not (stream.reset or stream.headers_ready.is_set() or self._closed.is_set()):
            window = min(self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size)
            if window <= 0:
                self._window.clear()
                await self._flush()
                await self._window.wait()
                continue
            self._h2.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
        if not view:
            self._h2.end_stream(stream_id)
        await self._flush()
        await stream.headers_ready.wait()
        return stream_id, stream

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        """One request; returns (status, whole body)."""
        payload = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
        stream_id, stream = await self._open(method, path, payload)
        chunks = []
        while (chunk := await stream.data.get()) is not None:
            chunks.append(chunk)
        self._streams.pop(stream_id, None)
        return stream.status, b"".join(chunks)

    async def register(
        self,
        node_key: NodePrivate,
        *,
        auth_key: str = "",
        hostname: str = "pytest",
        old_node_key: str = "",
        expiry: str | None = None,
        hostinfo: dict[str, Any] | None = None,
        followup: str = "",
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "Version": self.capver,
            "NodeKey": node_key.public().text,
            "Hostinfo": hostinfo or {"Hostname": hostname, "OS": "linux", "GoArch": "amd64"},
        }
        if auth_key:
            body["Auth"] = {"AuthKey": auth_key}
        if old_node_key:
            body["OldNodeKey"] = old_node_key
        if expiry:
            body["Expiry"] = expiry
        if followup:
            body["Followup"] = followup
        status, data = await self.request("POST", "/machine/register", body)
        if status != 200:
            raise ControlClientError(f"register answered {status}: {data[:200]!r}")
        return dict(json.loads(data))

    async def map_stream(
        self,
        node_key: NodePrivate,
        *,
        hostname: str = "pytest",
        endpoints: list[str] | None = None,
        compress: bool = True,
        extra: dict[str, Any] | None = None,
        parse: Callable[[bytes], Any] | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """A streaming map poll: yields each MapResponse as it arrives (decoded, unchecked; by `parse` when
        given, see tailcfg.frame.FrameDecoder)."""
        body = {
            "Version": self.capver,
            "NodeKey": node_key.public().text,
            "DiscoKey": DiscoPublic(b"\x11" * 32).text,
            "Stream": True,
            "Compress": "zstd" if compress else "",
            "Hostinfo": {"Hostname": hostname, "OS": "linux"},
            "Endpoints": endpoints or [],
        } | (extra or {})
        stream_id, stream = await self._open("POST", "/machine/map", json.dumps(body).encode())
        if stream.status != 200:
            data = b""
            while (chunk := await stream.data.get()) is not None:
                data += chunk
            raise ControlClientError(f"map answered {stream.status}: {data[:200]!r}")
        decoder = FrameDecoder(compress, parse=parse)
        try:
            while (chunk := await stream.data.get()) is not None:
                try:
                    messages = decoder.feed(chunk)
                except FrameError as exc:
                    raise ControlClientError(f"map stream: {exc}") from None
                for message in messages:
                    yield message
        finally:
            self._streams.pop(stream_id, None)
            if not self._closed.is_set():
                with contextlib.suppress(Exception):
                    self._h2.reset_stream(stream_id)
                    await self._flush()

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self._http is not None:
            await self._http.close()
