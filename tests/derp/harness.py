"""Helpers to run DERP servers on loopback inside a test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from derp.http import add_derp_routes
from derp.server import DerpServer

T = TypeVar("T")

WAIT = 5.0
"""Upper bound for any single wait in these tests; generous so slow CI never flakes."""


def loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serving(server: DerpServer, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Serve ``server`` on an ephemeral loopback port; yield its ``/derp`` URL."""
    app = web.Application()
    add_derp_routes(app, server)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    sock = loopback_socket()
    port = sock.getsockname()[1]
    site = web.SockSite(runner, sock, ssl_context=tls)
    await site.start()
    scheme = "https" if tls else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}/derp"
    finally:
        await runner.cleanup()


async def within(awaitable: Awaitable[T], seconds: float = WAIT) -> T:
    """Await with an upper bound so a broken server fails the test instead of hanging it."""
    async with asyncio.timeout(seconds):
        return await awaitable


async def eventually(predicate: Callable[[], bool], seconds: float = WAIT) -> None:
    """Poll ``predicate`` until true; fail after ``seconds``."""
    async with asyncio.timeout(seconds):
        # Polling is deliberate: the predicates read server state that has no event to wait on.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
