"""Credentials: preauth keys (for registering nodes) and API keys (for the REST API).

Both are `hskey-...` secrets shown once at creation and kept only as a prefix and a hash (auth/secret_keys).
A component of the state (the store delegates to it): its mutations share the store's mutation guard, so
they queue with every other mutation; none of them changes what a node or map shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from types import MappingProxyType

from pyheadscale.audit import AuditLog
from pyheadscale.auth import secret_keys
from pyheadscale.db.database import Database
from pyheadscale.state.errors import AuthFailed, NotFound, StateError
from pyheadscale.state.models import ApiKey, PreAuthKey
from pyheadscale.state.mutations import MutationGuard, Outcome, atomic
from pyheadscale.state.names import now, validate_tags
from pyheadscale.state.users import Users


class Credentials:
    def __init__(self, db: Database, mutations: MutationGuard, users: Users, audit: AuditLog) -> None:
        self.db, self.mutations, self.users, self.audit = db, mutations, users, audit
        self._preauth_keys: dict[int, PreAuthKey] = {}
        self._api_keys: dict[int, ApiKey] = {}
        self.preauth_keys: Mapping[int, PreAuthKey] = MappingProxyType(self._preauth_keys)
        self.api_keys: Mapping[int, ApiKey] = MappingProxyType(self._api_keys)

    def load(self, preauth_keys: Iterable[PreAuthKey], api_keys: Iterable[ApiKey]) -> None:
        self._preauth_keys.update((k.id, k) for k in preauth_keys)
        self._api_keys.update((k.id, k) for k in api_keys)

    # ---- preauth keys ----

    @atomic
    async def create_preauth_key(
        self,
        user_id: int | None,
        *,
        reusable: bool = False,
        ephemeral: bool = False,
        tags: Iterable[str] = (),
        expiration: datetime | None = None,
    ) -> Outcome[tuple[PreAuthKey, str]]:
        """Create a key; returns the record and the full key text (never stored, shown only once)."""
        if user_id is not None:
            self.users.get(user_id)
        tag_list = validate_tags(tags)
        if user_id is None and not tag_list:
            raise StateError("a preauth key needs a user or at least one tag")
        text, prefix, secret_hash = secret_keys.new_key_material(secret_keys.PREAUTH_KEY)
        key = PreAuthKey(
            0,
            prefix,
            secret_hash,
            user_id,
            reusable,
            ephemeral,
            False,
            tag_list,
            now(),
            expiration or now() + timedelta(hours=1),
        )
        key = replace(key, id=await self.db.insert_preauth_key(key))
        self._preauth_keys[key.id] = key
        self.audit.record(
            "preauthkey.create",
            f"preauthkey:{key.id}",
            prefix=prefix,
            user_id=user_id,
            reusable=reusable,
            ephemeral=ephemeral,
            tags=tag_list,
        )
        return Outcome((key, text))

    @atomic
    async def expire_preauth_key(self, key_id: int) -> Outcome[PreAuthKey]:
        key = self.preauth_keys.get(key_id)
        if key is None:
            raise NotFound(f"preauth key {key_id} not found")
        updated = replace(key, expiration=now())
        await self.db.update_preauth_key(updated)
        self._preauth_keys[key_id] = updated
        self.audit.record("preauthkey.expire", f"preauthkey:{key_id}", prefix=key.prefix)
        return Outcome(updated)

    @atomic
    async def delete_preauth_key(self, key_id: int) -> Outcome[None]:
        if key_id not in self.preauth_keys:
            raise NotFound(f"preauth key {key_id} not found")
        await self.db.delete_preauth_key(key_id)
        del self._preauth_keys[key_id]
        self.audit.record("preauthkey.delete", f"preauthkey:{key_id}")
        return Outcome(None)

    def find_preauth_key(self, text: str) -> PreAuthKey:
        """The usable key matching `text`, or AuthFailed with a reason safe to show the client.

        On the event loop, prefer `verify_preauth_key`: a key made by Headscale may have a bcrypt hash.
        """
        key, secret = self._preauth_key_named(text)
        if key is None or not secret_keys.secret_matches(secret, key.secret_hash):
            raise AuthFailed("invalid authkey")
        if key.expiration is not None and key.expiration <= now():
            raise AuthFailed("authkey expired")
        if key.used and not key.reusable:
            raise AuthFailed("authkey already used")
        return key

    async def verify_preauth_key(self, text: str) -> PreAuthKey:
        """`find_preauth_key`, with a bcrypt check (Headscale's keys) done on a worker thread first."""
        key, secret = self._preauth_key_named(text)
        if key is None or not await secret_keys.prove_bcrypt(secret, key.secret_hash):
            raise AuthFailed("invalid authkey")
        return self.find_preauth_key(text)

    def _preauth_key_named(self, text: str) -> tuple[PreAuthKey | None, str]:
        """The key whose prefix `text` carries (not yet checked against its secret) and the secret part."""
        parts = secret_keys.split_key(text, secret_keys.PREAUTH_KEY)
        if parts is None:
            legacy = secret_keys.legacy_preauth_prefix(text)
            if legacy is None:
                raise AuthFailed("invalid authkey format")
            parts = legacy, text.strip()
        prefix, secret = parts
        return next((k for k in self.preauth_keys.values() if k.prefix == prefix), None), secret

    # ---- API keys ----

    @atomic
    async def create_api_key(self, expiration: datetime | None) -> Outcome[tuple[ApiKey, str]]:
        """Create an API key; returns the record and the full key text, which is never stored and shown once.

        The secret is 256 random bits, so SHA-256 (shared with preauth keys) is as safe as a slow hash.
        """
        text, prefix, secret_hash = secret_keys.new_key_material(secret_keys.API_KEY)
        key = ApiKey(0, prefix, secret_hash, now(), expiration)
        key = replace(key, id=await self.db.insert_api_key(key))
        self._api_keys[key.id] = key
        self.audit.record("apikey.create", f"apikey:{key.id}", prefix=prefix)
        return Outcome((key, text))

    def get_api_key(self, key_id: int) -> ApiKey:
        key = self.api_keys.get(key_id)
        if key is None:
            raise NotFound(f"API key {key_id} not found")
        return key

    def api_key_by_prefix(self, prefix: str) -> ApiKey:
        """Accepts the bare 12-hex prefix or the masked form listings show (`hskey-api-<prefix>-***`)."""
        bare = prefix.removeprefix(secret_keys.API_KEY).removesuffix("-***")
        key = next((k for k in self.api_keys.values() if k.prefix == bare), None)
        if key is None:
            raise NotFound(f"API key with prefix {prefix!r} not found")
        return key

    def authenticate_api_key(self, text: str) -> ApiKey | None:
        """The known, unexpired API key `text` names, else None (constant-time on the secret).

        On the event loop, prefer `verify_api_key`: a key taken over from Headscale carries a bcrypt hash.
        """
        parts = secret_keys.split_key(text, secret_keys.API_KEY)
        if parts is None:
            return None
        key = next((k for k in self.api_keys.values() if k.prefix == parts[0]), None)
        if key is None or not secret_keys.secret_matches(parts[1], key.secret_hash):
            return None
        return key if key.expiration is None or key.expiration > now() else None

    async def verify_api_key(self, text: str) -> ApiKey | None:
        """`authenticate_api_key`, with a bcrypt check (Headscale's keys) done on a worker thread first."""
        parts = secret_keys.split_key(text, secret_keys.API_KEY)
        key = next((k for k in self.api_keys.values() if parts and k.prefix == parts[0]), None)
        if parts is None or key is None or not await secret_keys.prove_bcrypt(parts[1], key.secret_hash):
            return None
        return self.authenticate_api_key(text)

    @atomic
    async def expire_api_key(self, key_id: int) -> Outcome[ApiKey]:
        updated = replace(self.get_api_key(key_id), expiration=now())
        await self.db.update_api_key(updated)
        self._api_keys[key_id] = updated
        self.audit.record("apikey.expire", f"apikey:{key_id}", prefix=updated.prefix)
        return Outcome(updated)

    @atomic
    async def delete_api_key(self, key_id: int) -> Outcome[None]:
        key = self.get_api_key(key_id)
        await self.db.delete_api_key(key_id)
        del self._api_keys[key_id]
        self.audit.record("apikey.delete", f"apikey:{key_id}", prefix=key.prefix)
        return Outcome(None)

    def check_still_usable(self, key: PreAuthKey) -> None:
        """A key validated before the mutation began may have been used up, expired or removed since."""
        current = self.preauth_keys.get(key.id)
        if current is None:
            raise AuthFailed("invalid authkey")
        if current.expiration is not None and current.expiration <= now():
            raise AuthFailed("authkey expired")
        if current.used and not current.reusable:
            raise AuthFailed("authkey already used")

    async def mark_used(self, key: PreAuthKey) -> None:
        """Within a running mutation: a single-use key has registered a node (written through)."""
        if not key.reusable and not key.used:
            updated = replace(key, used=True)
            await self.db.update_preauth_key(updated)
            self._preauth_keys[key.id] = updated

    def used(self, key: PreAuthKey) -> None:
        """Within a running mutation: the database marked a single-use key used along with its node."""
        self._preauth_keys[key.id] = replace(key, used=True)

    def forget_keys_of(self, user_id: int) -> list[PreAuthKey]:
        """Within a running mutation: the user's preauth keys went with it (the database cascades)."""
        gone = [k for k in self._preauth_keys.values() if k.user_id == user_id]
        for key in gone:
            del self._preauth_keys[key.id]
        return gone
