"""API keys: list, create, expire, delete. The key text appears once, in the create response."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

from pyheadscale.api import serialize
from pyheadscale.api.errors import invalid
from pyheadscale.api.resource import Resource
from pyheadscale.grpc.schema import pb
from pyheadscale.state.models import ApiKey
from pyheadscale.state.names import now

# Without an expiration Headscale would store a key born expired; we give it the CLI's default lifetime.
DEFAULT_LIFETIME = timedelta(days=90)


class ApiKeys(Resource):
    def _api_key(self, request: Any) -> ApiKey:
        """By id or by prefix (bare or masked), never both, as Headscale names a key."""
        if request.id and request.prefix:
            raise invalid("provide either id or prefix, not both")
        if request.id:
            return self.store.get_api_key(request.id)
        if not request.prefix:
            raise invalid("must provide id or prefix")
        return self.store.api_key_by_prefix(request.prefix)

    async def list_api_keys(self, _request: Any) -> Any:
        keys = sorted(self.store.api_keys.values(), key=lambda k: k.id)
        return pb.ListApiKeysResponse(api_keys=[serialize.api_key(k) for k in keys])

    async def create_api_key(self, request: Any) -> Any:
        expiration = request.expiration.ToDatetime(UTC) if request.HasField("expiration") else None
        if expiration is not None and expiration <= now():
            raise invalid("expiration is in the past")
        _key, text = await self.store.create_api_key(expiration or now() + DEFAULT_LIFETIME)
        return pb.CreateApiKeyResponse(api_key=text)

    async def expire_api_key(self, request: Any) -> Any:
        await self.store.expire_api_key(self._api_key(request).id)
        return pb.ExpireApiKeyResponse()

    async def delete_api_key(self, request: Any) -> Any:
        await self.store.delete_api_key(self._api_key(request).id)
        return pb.DeleteApiKeyResponse()
