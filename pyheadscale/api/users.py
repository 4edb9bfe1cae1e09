"""Users: list, create, rename, delete."""

from __future__ import annotations

from typing import Any

from pyheadscale.api import serialize
from pyheadscale.api.errors import ApiError, GrpcCode, invalid
from pyheadscale.api.resource import Resource
from pyheadscale.grpc.schema import pb
from pyheadscale.state.errors import Conflict


class Users(Resource):
    async def list_users(self, request: Any) -> Any:
        """Filters as Headscale applies them: by name, else by email, else by id; none lists everyone."""
        users = sorted(self.store.users.values(), key=lambda u: u.id)
        if request.name:
            users = [u for u in users if u.name == request.name]
        elif request.email:
            users = [u for u in users if u.email == request.email]
        elif request.id:
            users = [u for u in users if u.id == request.id]
        return pb.ListUsersResponse(users=[serialize.user(u) for u in users])

    async def create_user(self, request: Any) -> Any:
        if not request.name:
            raise invalid("name is required")
        user = await self.store.create_user(
            request.name, request.display_name, request.email, profile_pic_url=request.picture_url
        )
        return pb.CreateUserResponse(user=serialize.user(user))

    async def rename_user(self, request: Any) -> Any:
        user = await self.store.rename_user(request.old_id, request.new_name)
        return pb.RenameUserResponse(user=serialize.user(user))

    async def delete_user(self, request: Any) -> Any:
        try:
            await self.store.delete_user(request.id)
        except Conflict as exc:
            # Headscale answers "user still has nodes" as a failed precondition (400), not a conflict.
            raise ApiError(GrpcCode.FAILED_PRECONDITION, str(exc)) from None
        return pb.DeleteUserResponse()
