"""Nodes: list, get, delete, expire, rename, tag, approve routes, register, backfill addresses; and move
(`POST /node/{node_id}/user`), which pyheadscale keeps although Headscale dropped it."""

from __future__ import annotations

import ipaddress
from datetime import UTC
from typing import Any

from aiohttp import web

from pyheadscale.api import serialize
from pyheadscale.api.authflow import complete_login
from pyheadscale.api.errors import invalid
from pyheadscale.api.params import check_tags, field, json_body, parse_id, path_id
from pyheadscale.api.protojson import to_json
from pyheadscale.api.resource import Resource, reply
from pyheadscale.grpc.schema import pb
from pyheadscale.state.errors import Conflict
from pyheadscale.state.names import dns_label, now

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
            web.post("/node/{node_id}/user", self.move),
            web.post("/node/{node_id}/rename/", self.rename_to_hostname),
        ]

    def _node(self, node_id: int) -> Any:
        return serialize.node(self.store, self.store.get_node(node_id))

    async def list_nodes(self, request: Any) -> Any:
        """All nodes, or one user's (`user` takes a name, or an id as our CLI also accepts)."""
        nodes = sorted(self.store.nodes.values(), key=lambda n: n.id)
        if request.user:
            owner = self.store.resolve_user(request.user)
            nodes = [n for n in nodes if n.user_id == owner.id and not n.tags]
        return pb.ListNodesResponse(nodes=[serialize.node(self.store, n, listed=True) for n in nodes])

    async def get_node(self, request: Any) -> Any:
        return pb.GetNodeResponse(node=self._node(request.node_id))

    async def delete_node(self, request: Any) -> Any:
        await self.store.delete_node(self.store.get_node(request.node_id).id)
        return pb.DeleteNodeResponse()

    async def expire_node(self, request: Any) -> Any:
        """Expire now by default; `expiry` sets a time instead, `disable_expiry` removes expiry altogether."""
        node = self.store.get_node(request.node_id)
        has_expiry = request.HasField("expiry")
        if request.disable_expiry and has_expiry:
            raise invalid("cannot set both disable_expiry and expiry")
        if request.disable_expiry:
            expiry = None
        else:
            expiry = request.expiry.ToDatetime(UTC) if has_expiry else now()
        updated = await self.store.set_expiry(node.id, expiry)
        return pb.ExpireNodeResponse(node=serialize.node(self.store, updated))

    async def rename_node(self, request: Any) -> Any:
        """An empty name gives the node the name its hostname makes again, as Headscale does."""
        node = self.store.get_node(request.node_id)
        try:
            updated = await self.store.rename_node(node.id, request.new_name or dns_label(node.hostname))
        except Conflict as exc:
            # Headscale reports a taken name as invalid input (400), not a conflict.
            raise invalid(str(exc)) from None
        return pb.RenameNodeResponse(node=serialize.node(self.store, updated))

    async def set_tags(self, request: Any) -> Any:
        node = self.store.get_node(request.node_id)
        tags = check_tags(list(request.tags), "tags")
        if not tags:
            raise invalid("tags must not be empty: a tagged node keeps at least one tag")
        updated = await self.store.set_tags(node.id, tags)
        return pb.SetTagsResponse(node=serialize.node(self.store, updated))

    async def set_approved_routes(self, request: Any) -> Any:
        node = self.store.get_node(request.node_id)
        updated = await self.store.set_approved_routes(node.id, parse_routes(list(request.routes)))
        return pb.SetApprovedRoutesResponse(node=serialize.node(self.store, updated))

    async def backfill_node_ips(self, request: Any) -> Any:
        """Addresses for families a node lacks (after a prefix was added); guarded by `confirmed`."""
        if not request.confirmed:
            raise invalid("backfilling node IPs changes addresses: not confirmed (pass confirmed=true)")
        return pb.BackfillNodeIPsResponse(changes=await self.store.backfill_ips())

    async def register_node(self, request: Any) -> Any:
        """Completing an interactive login, the older way: `user` and `key` (the auth id)."""
        return pb.RegisterNodeResponse(node=await complete_login(self, request.key, request.user))

    async def rename_to_hostname(self, request: web.Request) -> web.Response:
        """RenameNode with an empty name, which gRPC can send but a REST path segment cannot."""
        node_id = path_id(request, "node_id", "node id")
        answer = await self.rename_node(pb.RenameNodeRequest(node_id=node_id, new_name=""))
        return reply(to_json(answer))

    async def move(self, request: web.Request) -> web.Response:
        node = self.store.get_node(path_id(request, "node_id", "node id"))
        user_ref = field(await json_body(request), "user")
        if user_ref in (None, ""):
            raise invalid("user is required: the id of the user to move the node to")
        updated = await self.store.move_node(node.id, parse_id(user_ref, "user"))
        return reply({"node": to_json(serialize.node(self.store, updated))})
