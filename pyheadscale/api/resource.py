"""The base of each service part: access to the server's store, and the JSON reply helper for extra routes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from pyheadscale.api.errors import ApiError, GrpcCode

if TYPE_CHECKING:
    from pyheadscale.app import Server
    from pyheadscale.state.store import Store


class Resource:
    """One group of rpcs (methods named after them, taking and returning headscale.v1 messages).

    `routes()` lists the HTTP routes this part serves beyond Headscale's own bindings (pyheadscale's
    additions); the gateway maps the rpcs.
    """

    def __init__(self, server: Server) -> None:
        self.server = server

    @property
    def store(self) -> Store:
        store = self.server.store
        if store is None:
            raise ApiError(GrpcCode.FAILED_PRECONDITION, "server is still starting")
        return store

    def routes(self) -> list[web.RouteDef]:
        return []


def reply(body: dict[str, Any] | None = None) -> web.Response:
    """A 200 with a JSON object (an empty one for operations that return nothing, as Headscale does)."""
    return web.json_response(body or {})
