"""The base of each service part: the API's context (what it may use), and the JSON reply helper."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pyheadscale.api.context import ApiContext
from pyheadscale.state.store import Store


class Resource:
    """One group of rpcs (methods named after them, taking and returning headscale.v1 messages).

    `routes()` lists the HTTP routes this part serves beyond Headscale's own bindings (pyheadscale's
    additions); the gateway maps the rpcs.
    """

    def __init__(self, context: ApiContext) -> None:
        self.context = context

    @property
    def store(self) -> Store:
        return self.context.store

    def routes(self) -> list[web.RouteDef]:
        return []


def reply(body: dict[str, Any] | None = None) -> web.Response:
    """A 200 with a JSON object (an empty one for operations that return nothing, as Headscale does)."""
    return web.json_response(body or {})
