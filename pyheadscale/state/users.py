"""The users: every user's current record, found by id, name or identity-provider id, and the mutations that
create and change one.

A component of the state (the store delegates to it): its mutations share the store's mutation guard and
return the USERS change with the policy already recompiled for the new user list. Deleting a user crosses
into nodes and keys, so the store does that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from pyheadscale.audit import AuditLog
from pyheadscale.db.database import Database
from pyheadscale.state.consequences import PolicyEffects
from pyheadscale.state.errors import Conflict, NotFound
from pyheadscale.state.models import User
from pyheadscale.state.mutations import MutationGuard, Outcome, atomic
from pyheadscale.state.names import check_user_name, now


class Users:
    def __init__(
        self, db: Database, mutations: MutationGuard, audit: AuditLog, effects: PolicyEffects
    ) -> None:
        self.db, self.mutations, self.audit, self.effects = db, mutations, audit, effects
        self._by_id: dict[int, User] = {}
        self.by_id: Mapping[int, User] = MappingProxyType(self._by_id)

    def get(self, user_id: int) -> User:
        user = self._by_id.get(user_id)
        if user is None:
            raise NotFound(f"user {user_id} not found")
        return user

    def by_name(self, name: str) -> User | None:
        return next((u for u in self._by_id.values() if u.name == name), None)

    def by_provider_id(self, provider_id: str) -> User | None:
        """The user an identity provider knows by this identifier (OIDC: issuer/subject)."""
        return next((u for u in self._by_id.values() if provider_id and u.provider_id == provider_id), None)

    def resolve(self, ref: str | int) -> User:
        """A user by numeric id or by name, as the CLI accepts either."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            user = self._by_id.get(int(ref))
            if user is not None:
                return user
        user = self.by_name(str(ref))
        if user is None:
            raise NotFound(f"user {ref!r} not found")
        return user

    def _check_name(self, name: str, for_user: User | None = None) -> None:
        """StateError for a malformed name; Conflict unless it is free or already `for_user`'s."""
        check_user_name(name)
        if self.by_name(name) not in (None, for_user):
            raise Conflict(f"user {name!r} already exists")

    def put(self, user: User) -> None:
        """Hold a record as loaded from the database."""
        self._by_id[user.id] = user

    def remove(self, user_id: int) -> None:
        """Within a running mutation: the user's row is gone."""
        self._by_id.pop(user_id, None)

    @atomic
    async def create(
        self,
        name: str,
        display_name: str = "",
        email: str = "",
        *,
        provider: str = "",
        provider_id: str = "",
        profile_pic_url: str = "",
    ) -> Outcome[User]:
        self._check_name(name)
        user = User(0, name, display_name, email, provider, provider_id, profile_pic_url, now())
        user = replace(user, id=await self.db.insert_user(user))
        self._by_id[user.id] = user
        self.audit.record("user.create", f"user:{user.id}", name=name)
        return Outcome.of(user, self.effects.users_changed())

    @atomic
    async def rename(self, user_id: int, new_name: str) -> Outcome[User]:
        user = self.get(user_id)
        self._check_name(new_name, user)
        updated = replace(user, name=new_name)
        await self.db.update_user(updated)
        self._by_id[user_id] = updated
        self.audit.record("user.rename", f"user:{user_id}", old=user.name, new=new_name)
        return Outcome.of(updated, self.effects.users_changed())

    @atomic
    async def update_profile(
        self, user_id: int, *, name: str, display_name: str, email: str, profile_pic_url: str
    ) -> Outcome[User]:
        """Refresh what an identity provider says about a user at each login: names change there."""
        user = self.get(user_id)
        self._check_name(name, user)
        profile: dict[str, Any] = {
            "name": name,
            "display_name": display_name,
            "email": email,
            "profile_pic_url": profile_pic_url,
        }
        changed = {k: v for k, v in profile.items() if getattr(user, k) != v}
        if not changed:
            return Outcome(user)
        updated = replace(user, **changed)
        await self.db.update_user(updated)
        self._by_id[user_id] = updated
        self.audit.record("user.update", f"user:{user_id}", **changed)
        return Outcome.of(updated, self.effects.users_changed())
