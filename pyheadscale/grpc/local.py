"""The unix socket speaks both local APIs: REST (pyheadscale's CLI, over HTTP/1.1) and gRPC (Headscale's own
CLI, which always talks gRPC to `unix_socket`). Both are trusted by the socket's file permissions.

Each accepted connection is told apart by its first bytes without consuming them: an HTTP/2 connection
preface (`PRI * HTTP/2.0`) goes to a gRPC server listening on a private socket (in a directory only we can
enter), anything else to the REST application on the same connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from grpc import aio

from pyheadscale.api.service import HeadscaleService
from pyheadscale.grpc.server import MAX_REQUEST_BYTES, service_handler

log = logging.getLogger(__name__)

HTTP2_PREFACE_START = b"PRI"
FIRST_BYTES_TIMEOUT = 10.0
PIPE_CHUNK = 1 << 16
PARTIAL_POLL_SECONDS = 0.05
# Connections being told apart or piped to gRPC at once; a local CLI needs one.
MAX_CONNECTIONS = 256


async def _readable(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(conn.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())


async def _first_bytes(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes:
    """Up to three bytes the client sent first, left unread in the socket."""
    while True:
        try:
            head = conn.recv(len(HTTP2_PREFACE_START), socket.MSG_PEEK)
        except BlockingIOError:
            head = None
        if head is not None and (len(head) >= len(HTTP2_PREFACE_START) or not head):
            return head
        if head:
            # Some bytes wait unread, so the socket stays readable: poll gently for the rest instead.
            await asyncio.sleep(PARTIAL_POLL_SECONDS)
        else:
            await _readable(loop, conn)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(PIPE_CHUNK):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _to_grpc(conn: socket.socket, grpc_path: str) -> None:
    client_reader, client_writer = await asyncio.open_connection(sock=conn)
    try:
        upstream_reader, upstream_writer = await asyncio.open_unix_connection(grpc_path)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))


class LocalSocket:
    """Serves the bound unix socket `sock`: REST through `runner`, gRPC through its own private server."""

    def __init__(self, service: HeadscaleService, sock: socket.socket, runner: web.AppRunner) -> None:
        self.service = service
        self.sock = sock
        self.runner = runner
        self._dir = Path(tempfile.mkdtemp(prefix="pyheadscale-grpc-"))
        self.grpc_path = str(self._dir / "grpc.sock")
        self._grpc: aio.Server | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        grpc_server = self._grpc = aio.server(
            options=[("grpc.max_receive_message_length", MAX_REQUEST_BYTES)]
        )
        grpc_server.add_generic_rpc_handlers((service_handler(self.service, None),))
        grpc_server.add_insecure_port(f"unix:{self.grpc_path}")
        await grpc_server.start()
        self.sock.listen(128)
        self.sock.setblocking(False)
        self._accepting = asyncio.get_running_loop().create_task(self._accept())

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self.sock)
            if len(self._connections) >= MAX_CONNECTIONS:
                log.warning("local socket: %d connections open, refusing another", len(self._connections))
                conn.close()
                continue
            conn.setblocking(False)
            task = loop.create_task(self._serve(loop, conn))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _serve(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
        try:
            head = await asyncio.wait_for(_first_bytes(loop, conn), FIRST_BYTES_TIMEOUT)
        except (TimeoutError, OSError):
            conn.close()
            return
        if not head:
            conn.close()
        elif head.startswith(HTTP2_PREFACE_START):
            await _to_grpc(conn, self.grpc_path)
        else:
            factory: Callable[[], Any] = self.runner.server  # type: ignore[assignment]
            await loop.connect_accepted_socket(factory, conn)

    async def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        self.sock.close()
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        await asyncio.to_thread(shutil.rmtree, self._dir, True)


async def start_local_socket(
    service: HeadscaleService, sock: socket.socket, runner: web.AppRunner
) -> Callable[[], Awaitable[None]]:
    local = LocalSocket(service, sock, runner)
    await local.start()
    return local.close
