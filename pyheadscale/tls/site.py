"""The TLS listener: an aiohttp TCPSite whose handshakes must finish within a deadline.

The connection limits (pyheadscale.listener) see a TLS connection only once its handshake is done, and
asyncio's default handshake timeout is a minute: without a shorter one, sockets stalled mid-handshake would be
a way around the per-source and header-timeout limits. The handshake gets the header timeout.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiohttp import web


class TLSSite(web.TCPSite):
    """A TCPSite serving TLS with `handshake_timeout` seconds for each handshake."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, *, ssl_context: ssl.SSLContext, **kwargs: Any
    ) -> None:
        self.handshake_timeout: float = kwargs.pop("handshake_timeout")
        super().__init__(runner, host, port, ssl_context=ssl_context, **kwargs)

    async def start(self) -> None:
        # TCPSite.start with the handshake timeout added (aiohttp has no parameter for it).
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server,
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self.handshake_timeout,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
