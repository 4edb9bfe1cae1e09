"""The base of each resource module: access to the server's store, and the JSON reply helper."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from pyheadscale.api.errors import ApiError, GrpcCode

if TYPE_CHECKING:
    from pyheadscale.app import Server
    from pyheadscale.state.store import Store


class Resource:
    """One group of endpoints. Subclasses list their routes; handlers read the store at request time."""

    def __init__(self, server: Server) -> None:
        self.server = server

    @property
    def store(self) -> Store:
        store = self.server.store
        if store is None:
            raise ApiError(GrpcCode.FAILED_PRECONDITION, "server is still starting")
        return store

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError


def reply(body: dict[str, Any] | None = None) -> web.Response:
    """A 200 with a JSON object (an empty one for operations that return nothing, as Headscale does)."""
    return web.json_response(body or {})
