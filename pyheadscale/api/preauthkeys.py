"""Preauth keys: list, create, expire, delete, each named by its id as Headscale's current API does."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

from pyheadscale.api import serialize
from pyheadscale.api.errors import invalid, not_found
from pyheadscale.api.params import check_tags
from pyheadscale.api.resource import Resource
from pyheadscale.grpc.schema import pb
from pyheadscale.state.models import PreAuthKey
from pyheadscale.state.names import now

DEFAULT_LIFETIME = timedelta(hours=1)


class PreAuthKeys(Resource):
    def _preauth_key(self, key_id: int) -> PreAuthKey:
        if not key_id:
            raise invalid("id is required: the preauth key's id")
        found = self.store.preauth_keys.get(key_id)
        if found is None:
            raise not_found(f"preauth key {key_id} not found")
        return found

    async def list_pre_auth_keys(self, _request: Any) -> Any:
        keys = sorted(self.store.preauth_keys.values(), key=lambda k: k.id)
        return pb.ListPreAuthKeysResponse(pre_auth_keys=[serialize.preauth_key(self.store, k) for k in keys])

    async def create_pre_auth_key(self, request: Any) -> Any:
        """A key for user `user` (an id; 0 makes a tags-only key, which then needs `acl_tags`)."""
        user_id = self.store.get_user(request.user).id if request.user else None
        expiration = request.expiration.ToDatetime(UTC) if request.HasField("expiration") else None
        if expiration is not None and expiration <= now():
            raise invalid("expiration is in the past")
        key, text = await self.store.create_preauth_key(
            user_id,
            reusable=request.reusable,
            ephemeral=request.ephemeral,
            tags=check_tags(list(request.acl_tags), "acl_tags"),
            expiration=expiration or now() + DEFAULT_LIFETIME,
        )
        return pb.CreatePreAuthKeyResponse(pre_auth_key=serialize.preauth_key(self.store, key, text))

    async def expire_pre_auth_key(self, request: Any) -> Any:
        await self.store.expire_preauth_key(self._preauth_key(request.id).id)
        return pb.ExpirePreAuthKeyResponse()

    async def delete_pre_auth_key(self, request: Any) -> Any:
        await self.store.delete_preauth_key(self._preauth_key(request.id).id)
        return pb.DeletePreAuthKeyResponse()
