"""Nodes: list, get, delete, expire, rename, move, tag, approve routes, register (`/node`)."""

from __future__ import annotations

import ipaddress

from aiohttp import web

from pyheadscale.api import serialize
from pyheadscale.api.authflow import complete_login
from pyheadscale.api.errors import invalid
from pyheadscale.api.params import (
    bool_field,
    check_tags,
    field,
    json_body,
    optional_time_field,
    parse_id,
    parse_time,
    path_id,
    str_list_field,
)
from pyheadscale.api.resource import Resource, reply
from pyheadscale.state.errors import Conflict
from pyheadscale.state.models import Node
from pyheadscale.state.names import now

_EXIT_ROUTES = ("0.0.0.0/0", "::/0")


def parse_routes(routes: list[str]) -> list[str]:
    """Canonical prefixes. An exit route approves both families, else clients won't offer the exit node."""
    out: set[str] = set()
    for route in routes:
        try:
            prefix = ipaddress.ip_network(route.strip())
        except ValueError:
            raise invalid(
                f"route {route!r} is not an IP prefix such as 10.0.0.0/8 (host bits must be zero)"
            ) from None
        text = str(prefix)
        out.update(_EXIT_ROUTES if text in _EXIT_ROUTES else (text,))
    return sorted(out)


class Nodes(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/node", self.list),
            web.post("/node/register", self.register),
            web.post("/node/backfillips", self.backfill_ips),
            web.get("/node/{node_id}", self.get),
            web.delete("/node/{node_id}", self.delete),
            web.post("/node/{node_id}/expire", self.expire),
            web.post("/node/{node_id}/rename/{new_name}", self.rename),
            web.post("/node/{node_id}/user", self.move),
            web.post("/node/{node_id}/tags", self.set_tags),
            web.post("/node/{node_id}/approve_routes", self.approve_routes),
        ]

    def _node(self, request: web.Request) -> Node:
        return self.store.get_node(path_id(request, "node_id", "node id"))

    def _reply(self, node: Node) -> web.Response:
        return reply({"node": serialize.node(self.store, node)})

    async def list(self, request: web.Request) -> web.Response:
        """All nodes, or one user's (`?user=` takes a name, or an id as our CLI also accepts)."""
        nodes = sorted(self.store.nodes.values(), key=lambda n: n.id)
        ref = request.query.get("user", "")
        if ref:
            owner = self.store.resolve_user(ref)
            nodes = [n for n in nodes if n.user_id == owner.id and not n.tags]
        return reply({"nodes": [serialize.node(self.store, n) for n in nodes]})

    async def get(self, request: web.Request) -> web.Response:
        return self._reply(self._node(request))

    async def delete(self, request: web.Request) -> web.Response:
        await self.store.delete_node(self._node(request).id)
        return reply()

    async def expire(self, request: web.Request) -> web.Response:
        """Expire now by default; `expiry` sets a time instead, `disable_expiry` removes expiry altogether.

        Both are read from the body, or from the query string as grpc-gateway also binds them there.
        """
        node = self._node(request)
        body = await json_body(request)
        expiry = optional_time_field(body, "expiry")
        disable = bool_field(body, "disable_expiry")
        if "expiry" in request.query:
            expiry = parse_time(request.query["expiry"], "expiry")
        if request.query.get("disable_expiry", "").lower() in ("true", "1"):
            disable = True
        if disable and expiry is not None:
            raise invalid("cannot set both disable_expiry and expiry")
        updated = await self.store.set_expiry(node.id, None if disable else expiry or now())
        return self._reply(updated)

    async def rename(self, request: web.Request) -> web.Response:
        node = self._node(request)
        try:
            updated = await self.store.rename_node(node.id, request.match_info["new_name"])
        except Conflict as exc:
            # Headscale reports a taken name as invalid input (400), not a conflict.
            raise invalid(str(exc)) from None
        return self._reply(updated)

    async def move(self, request: web.Request) -> web.Response:
        node = self._node(request)
        body = await json_body(request)
        user_ref = field(body, "user")
        if user_ref in (None, ""):
            raise invalid("user is required: the id of the user to move the node to")
        updated = await self.store.move_node(node.id, parse_id(user_ref, "user"))
        return self._reply(updated)

    async def set_tags(self, request: web.Request) -> web.Response:
        node = self._node(request)
        tags = check_tags(str_list_field(await json_body(request), "tags"), "tags")
        if not tags:
            raise invalid("tags must not be empty: a tagged node keeps at least one tag")
        return self._reply(await self.store.set_tags(node.id, tags))

    async def approve_routes(self, request: web.Request) -> web.Response:
        node = self._node(request)
        routes = parse_routes(str_list_field(await json_body(request), "routes"))
        return self._reply(await self.store.set_approved_routes(node.id, routes))

    async def backfill_ips(self, request: web.Request) -> web.Response:
        """Addresses for families a node lacks (after a prefix was added); guarded by `?confirmed=true`."""
        if request.query.get("confirmed", "").lower() != "true":
            raise invalid("backfilling node IPs changes addresses: not confirmed (pass confirmed=true)")
        return reply({"changes": await self.store.backfill_ips()})

    async def register(self, request: web.Request) -> web.Response:
        """Completing an interactive login, the older way: `?user=NAME&key=<auth id>`."""
        return await complete_login(self, request.query.get("key", ""), request.query.get("user", ""))
