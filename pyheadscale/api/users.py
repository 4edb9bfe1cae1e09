"""Users: list, create, rename, delete (`/user`)."""

from __future__ import annotations

from aiohttp import web

from pyheadscale.api import serialize
from pyheadscale.api.errors import ApiError, GrpcCode
from pyheadscale.api.params import json_body, optional_id, path_id, str_field
from pyheadscale.api.resource import Resource, reply
from pyheadscale.state.errors import Conflict


class Users(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/user", self.list),
            web.post("/user", self.create),
            web.post("/user/{old_id}/rename/{new_name}", self.rename),
            web.delete("/user/{id}", self.delete),
        ]

    async def list(self, request: web.Request) -> web.Response:
        """Filters as Headscale applies them: by name, else by email, else by id; none lists everyone."""
        query = request.query
        user_id = optional_id(query.get("id"), "id")
        users = sorted(self.store.users.values(), key=lambda u: u.id)
        if query.get("name"):
            users = [u for u in users if u.name == query["name"]]
        elif query.get("email"):
            users = [u for u in users if u.email == query["email"]]
        elif user_id is not None:
            users = [u for u in users if u.id == user_id]
        return reply({"users": [serialize.user(u) for u in users]})

    async def create(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        name = str_field(body, "name")
        if not name:
            raise ApiError(GrpcCode.INVALID_ARGUMENT, "name is required")
        user = await self.store.create_user(
            name,
            str_field(body, "display_name"),
            str_field(body, "email"),
            profile_pic_url=str_field(body, "picture_url"),
        )
        return reply({"user": serialize.user(user)})

    async def rename(self, request: web.Request) -> web.Response:
        user_id = path_id(request, "old_id", "user id")
        user = await self.store.rename_user(user_id, request.match_info["new_name"])
        return reply({"user": serialize.user(user)})

    async def delete(self, request: web.Request) -> web.Response:
        user_id = path_id(request, "id", "user id")
        try:
            await self.store.delete_user(user_id)
        except Conflict as exc:
            # Headscale answers "user still has nodes" as a failed precondition (400), not a conflict.
            raise ApiError(GrpcCode.FAILED_PRECONDITION, str(exc)) from None
        return reply()
