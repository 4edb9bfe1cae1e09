"""Interactive login: a client without a preauth key waits while an operator (or an identity provider)
approves it.

The client's first RegisterRequest gets an AuthURL `<server_url>/register/<auth id>`; it then sends the same
request with `Followup` set to that URL and waits for the answer. The operator approves with `pyheadscale auth
register --auth-id <id> --user NAME` (or rejects), which resolves the waiting request. A pending login lives
for LIFETIME; a client that follows up on an expired or unknown id is given a fresh AuthURL.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pyheadscale.state.errors import NotFound, StateError
from pyheadscale.state.models import Node, User
from pyheadscale.state.store import Store

AUTH_ID_PREFIX = "hskey-authreq-"
LIFETIME = 15 * 60.0
MAX_PENDING = 10_000


#: How many refused tags a refusal names; the rest are counted (RequestTags come from the client).
MAX_TAGS_NAMED = 8


class LoginRejected(Exception):
    pass


class TagsRefused(StateError):
    """The approving user does not own every tag the machine asked for."""


TagCheck = Callable[[int, list[str]], list[str]]


@dataclass(slots=True)
class PendingLogin:
    auth_id: str
    machine_key: str
    node_key: str
    hostinfo: dict[str, Any]
    # The key expiry the client asked for (RegisterRequest.Expiry); it wins over the configured lifetime.
    requested_expiry: datetime | None = None
    created: float = field(default_factory=time.monotonic)
    outcome: asyncio.Future[Node | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def hostname(self) -> str:
        return str(self.hostinfo.get("Hostname") or "node")

    def expired(self, now: float) -> bool:
        return now - self.created > LIFETIME

    @property
    def requested_tags(self) -> list[str]:
        """`Hostinfo.RequestTags`, sorted and without repeats (as the node would carry them)."""
        tags = self.hostinfo.get("RequestTags") or []
        return sorted({str(t) for t in tags}) if isinstance(tags, list) else [str(tags)]


class PendingLogins:
    """Logins waiting for approval, by auth id."""

    def __init__(self) -> None:
        self._pending: dict[str, PendingLogin] = {}
        # user id, requested tags -> the tags that user may not give (set by the server to the policy's
        # tagOwners); without it every requested tag is refused.
        self.tags_not_owned: TagCheck | None = None

    def start(
        self,
        machine_key: str,
        node_key: str,
        hostinfo: dict[str, Any],
        *,
        auth_id: str | None = None,
        expiry: datetime | None = None,
    ) -> PendingLogin:
        """A new pending login; `auth_id` is given only by `debug create-node`, which names its own."""
        self._prune()
        if len(self._pending) >= MAX_PENDING:
            raise OverflowError("too many logins are waiting for approval; try again later")
        if auth_id is not None and (not auth_id.startswith(AUTH_ID_PREFIX) or auth_id in self._pending):
            raise ValueError(f"auth id {auth_id!r} must start with {AUTH_ID_PREFIX!r} and not be in use")
        login = PendingLogin(
            auth_id or AUTH_ID_PREFIX + secrets.token_hex(12), machine_key, node_key, hostinfo, expiry
        )
        self._pending[login.auth_id] = login
        return login

    def get(self, auth_id: str) -> PendingLogin | None:
        login = self._pending.get(auth_id)
        if login is not None and login.expired(time.monotonic()):
            self._drop(login)
            return None
        return login

    def list(self) -> list[PendingLogin]:
        self._prune()
        return list(self._pending.values())

    def pending(self, auth_id: str) -> PendingLogin:
        login = self.get(auth_id)
        if login is None:
            raise NotFound(f"no login is waiting with auth id {auth_id!r} (it may have expired)")
        return login

    async def approve(
        self, store: Store, login: PendingLogin, user: User, expiry: datetime | None, *, method: str
    ) -> Node:
        """Register the waiting machine as `user`'s node (`method`: cli, oidc) and let its client proceed.

        A machine that asked for tags (`--advertise-tags`) becomes a tagged node, owned by its tags and with
        no key expiry, when `user` owns every one of them; otherwise the login is refused, naming the tags.
        """
        requested = login.requested_tags
        if requested:
            refused = self.tags_not_owned(user.id, requested) if self.tags_not_owned else requested
            if refused:
                reason = _tags_refusal(refused)
                self._pending.pop(login.auth_id, None)
                if not login.outcome.done():
                    login.outcome.set_exception(LoginRejected(reason))
                raise TagsRefused(f"{reason} for user {user.name!r}")
        node = await store.register(
            machine_key=login.machine_key,
            node_key=login.node_key,
            hostinfo=login.hostinfo,
            user_id=None if requested else user.id,
            tags=requested,
            method=method,
            ephemeral=False,
            expiry=None if requested else (login.requested_expiry or expiry),
        )
        self.resolve(login, node)
        return node

    def resolve(self, login: PendingLogin, node: Node) -> None:
        self._pending.pop(login.auth_id, None)
        if not login.outcome.done():
            login.outcome.set_result(node)

    def reject(self, login: PendingLogin) -> None:
        self._pending.pop(login.auth_id, None)
        if not login.outcome.done():
            login.outcome.set_exception(LoginRejected("registration was rejected by the operator"))

    def _drop(self, login: PendingLogin) -> None:
        self._pending.pop(login.auth_id, None)
        if not login.outcome.done():
            login.outcome.set_result(None)

    def _prune(self) -> None:
        now = time.monotonic()
        for login in [p for p in self._pending.values() if p.expired(now)]:
            self._drop(login)

    def close(self) -> None:
        for login in list(self._pending.values()):
            self._drop(login)


def _tags_refusal(refused: list[str]) -> str:
    """Tailscale's and Headscale's wording, with Go's list formatting: `requested tags [tag:a tag:b] ...`."""
    named = " ".join(t[:64] for t in refused[:MAX_TAGS_NAMED])
    more = f" (and {len(refused) - MAX_TAGS_NAMED} more)" if len(refused) > MAX_TAGS_NAMED else ""
    return f"requested tags [{named}]{more} are invalid or not permitted"


def auth_id_from_followup(url: str) -> str:
    """The auth id at the end of a followup URL (`.../register/<id>`), or "" when it is not one of ours."""
    tail = url.rstrip("/").rsplit("/", 1)[-1]
    return tail if tail.startswith(AUTH_ID_PREFIX) else ""
