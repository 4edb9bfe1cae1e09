"""Preauth keys: list, create, expire, delete (`/preauthkey`).

A key is named by its id (Headscale's current API) or, as older clients do, by user and key text; the key
text may be the full key or the masked `hskey-auth-<prefix>-***` form listings show, so no secret is needed to
manage one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from aiohttp import web

from pyheadscale.api import serialize
from pyheadscale.api.errors import invalid, not_found
from pyheadscale.api.params import (
    bool_field,
    check_tags,
    field,
    json_body,
    optional_id,
    optional_time_field,
    str_field,
    str_list_field,
)
from pyheadscale.api.resource import Resource, reply
from pyheadscale.auth import secret_keys
from pyheadscale.state.models import PreAuthKey
from pyheadscale.state.names import now

DEFAULT_LIFETIME = timedelta(hours=1)


def _key_prefix(text: str) -> str:
    """The stored prefix named by a full key, a masked key, or the bare prefix."""
    parts = secret_keys.split_key(text, secret_keys.PREAUTH_KEY)
    if parts is not None:
        return parts[0]
    return text.strip().removeprefix(secret_keys.PREAUTH_KEY).removesuffix("-***")


class PreAuthKeys(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/preauthkey", self.list),
            web.post("/preauthkey", self.create),
            web.post("/preauthkey/expire", self.expire),
            web.delete("/preauthkey", self.delete),
        ]

    def _find(self, values: Mapping[str, Any]) -> PreAuthKey:
        key_id = optional_id(values.get("id"), "id")
        if key_id is not None:
            found = self.store.preauth_keys.get(key_id)
            if found is None:
                raise not_found(f"preauth key {key_id} not found")
            return found
        text = values.get("key")
        if not isinstance(text, str) or not text.strip():
            raise invalid("name the preauth key by id (or by user and key)")
        prefix = _key_prefix(text)
        user_ref = values.get("user")
        user_id = self.store.resolve_user(str(user_ref)).id if user_ref not in (None, "") else None
        for key in self.store.preauth_keys.values():
            if key.prefix == prefix and (user_id is None or key.user_id == user_id):
                return key
        raise not_found(f"preauth key {secret_keys.masked(secret_keys.PREAUTH_KEY, prefix[:12])} not found")

    async def list(self, request: web.Request) -> web.Response:
        keys = sorted(self.store.preauth_keys.values(), key=lambda k: k.id)
        ref = request.query.get("user", "")
        if ref:
            user_id = self.store.resolve_user(ref).id
            keys = [k for k in keys if k.user_id == user_id]
        return reply({"pre_auth_keys": [serialize.preauth_key(self.store, k) for k in keys]})

    async def create(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        user_ref = field(body, "user")
        user_id = None
        if user_ref not in (None, "", 0, "0"):
            # Headscale takes the user id; a name is accepted too, as older clients sent one.
            user_id = self.store.resolve_user(str(user_ref)).id
        expiration = optional_time_field(body, "expiration")
        if expiration is not None and expiration <= now():
            raise invalid("expiration is in the past")
        key, text = await self.store.create_preauth_key(
            user_id,
            reusable=bool_field(body, "reusable"),
            ephemeral=bool_field(body, "ephemeral"),
            tags=check_tags(str_list_field(body, "acl_tags"), "acl_tags"),
            expiration=expiration or now() + DEFAULT_LIFETIME,
        )
        return reply({"pre_auth_key": serialize.preauth_key(self.store, key, text)})

    async def expire(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        values = {"id": field(body, "id"), "user": field(body, "user"), "key": str_field(body, "key")}
        await self.store.expire_preauth_key(self._find(values).id)
        return reply()

    async def delete(self, request: web.Request) -> web.Response:
        await self.store.delete_preauth_key(self._find(request.query).id)
        return reply()
