"""Interactive login: a client without a preauth key waits while an operator (or an identity provider)
approves it.

The client's first RegisterRequest gets an AuthURL `<server_url>/register/<auth id>`; it then sends the same
request with `Followup` set to that URL and waits for the answer. The operator approves with `pyheadscale auth
register --auth-id <id> --user NAME` (or rejects), which resolves the waiting request. A pending login lives
for LIFETIME; a client that follows up on an expired or unknown id is given a fresh AuthURL.

Anyone can start a login, so what they hold is bounded: one pending login per machine key (a new one replaces
it), at most `max_per_source` per client address (an IPv6 /64), SITE_FACTOR times that per IPv6 /48, and
`max_pending` in all. When the table is full, the site holding the most logins loses its oldest one, so a
flood from some addresses can only ever displace itself, never the one login a real user elsewhere is
waiting on (unless the flood comes from more sites than `max_pending`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pyheadscale.ratelimit import site_of
from pyheadscale.state.errors import NotFound, StateError
from pyheadscale.state.models import Node, User
from pyheadscale.state.names import now
from pyheadscale.state.store import Store

AUTH_ID_PREFIX = "hskey-authreq-"
# An IPv6 site (/48) may hold this many times a single source's limit.
SITE_FACTOR = 4
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
    source: str = ""
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

    def expiry_or(self, default: datetime | None) -> datetime | None:
        """The key expiry the client asked for, while still ahead, else `default`."""
        asked = self.requested_expiry
        return asked if asked is not None and asked > now() else default

    @property
    def requested_tags(self) -> list[str]:
        """`Hostinfo.RequestTags`, sorted and without repeats (as the node would carry them)."""
        tags = self.hostinfo.get("RequestTags") or []
        return sorted({str(t) for t in tags}) if isinstance(tags, list) else [str(tags)]


class PendingLogins:
    """Logins waiting for approval, by auth id (and indexed by machine key and by source)."""

    def __init__(
        self, max_pending: int = MAX_PENDING, max_per_source: int = 32, tags_not_owned: TagCheck | None = None
    ) -> None:
        self.max_pending = max_pending
        self.max_per_source = max_per_source
        self._pending: dict[str, PendingLogin] = {}
        self._by_machine: dict[str, PendingLogin] = {}
        self._by_source: dict[str, dict[str, PendingLogin]] = {}
        self._by_site: dict[str, dict[str, PendingLogin]] = {}
        # user id, requested tags -> the tags that user may not give (the server passes the policy's
        # tagOwners); without it every requested tag is refused.
        self.tags_not_owned = tags_not_owned

    def __len__(self) -> int:
        return len(self._pending)

    def start(
        self,
        machine_key: str,
        node_key: str,
        hostinfo: dict[str, Any],
        *,
        auth_id: str | None = None,
        source: str = "",
        expiry: datetime | None = None,
    ) -> PendingLogin:
        """A new pending login from `source` (a rate-limit key, see ratelimit.source_of), replacing any the
        same machine had; `auth_id` is given only by `debug create-node`, which names its own."""
        self._prune()
        if auth_id is not None and (not auth_id.startswith(AUTH_ID_PREFIX) or auth_id in self._pending):
            raise ValueError(f"auth id {auth_id!r} must start with {AUTH_ID_PREFIX!r} and not be in use")
        previous = self._by_machine.get(machine_key)
        if previous is not None:
            self._drop(previous)
        if source and len(self._by_source.get(source, ())) >= self.max_per_source:
            raise OverflowError(
                f"too many logins from your address are waiting for approval (limit {self.max_per_source});"
                " try again later"
            )
        if source and len(self._by_site.get(site_of(source), ())) >= SITE_FACTOR * self.max_per_source:
            raise OverflowError(
                f"too many logins from your network ({site_of(source)}) are waiting for approval;"
                " try again later"
            )
        if len(self._pending) >= self.max_pending:
            self._evict()
        login = PendingLogin(
            auth_id or AUTH_ID_PREFIX + secrets.token_hex(12),
            machine_key,
            node_key,
            hostinfo,
            source=source,
            requested_expiry=expiry,
        )
        self._pending[login.auth_id] = login
        self._by_machine[machine_key] = login
        self._by_source.setdefault(source, {})[login.auth_id] = login
        self._by_site.setdefault(site_of(source), {})[login.auth_id] = login
        return login

    def for_machine(self, machine_key: str) -> PendingLogin | None:
        login = self._by_machine.get(machine_key)
        return login if login is not None and self.get(login.auth_id) is login else None

    def _evict(self) -> None:
        """Make room: the oldest login of the site holding the most."""
        crowded = max(self._by_site.values(), key=len)
        self._drop(next(iter(crowded.values())))

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
                reason = tags_refusal(refused)
                self._forget(login)
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
            expiry=None if requested else login.expiry_or(expiry),
        )
        self.resolve(login, node)
        return node

    def resolve(self, login: PendingLogin, node: Node) -> None:
        self._forget(login)
        if not login.outcome.done():
            login.outcome.set_result(node)

    def reject(self, login: PendingLogin) -> None:
        self._forget(login)
        if not login.outcome.done():
            login.outcome.set_exception(LoginRejected("registration was rejected by the operator"))

    def _forget(self, login: PendingLogin) -> None:
        self._pending.pop(login.auth_id, None)
        if self._by_machine.get(login.machine_key) is login:
            del self._by_machine[login.machine_key]
        for index, key in ((self._by_source, login.source), (self._by_site, site_of(login.source))):
            same = index.get(key)
            if same is not None:
                same.pop(login.auth_id, None)
                if not same:
                    del index[key]

    def _drop(self, login: PendingLogin) -> None:
        self._forget(login)
        if not login.outcome.done():
            login.outcome.set_result(None)

    def _prune(self) -> None:
        now = time.monotonic()
        for login in [p for p in self._pending.values() if p.expired(now)]:
            self._drop(login)

    def close(self) -> None:
        for login in list(self._pending.values()):
            self._drop(login)


def tags_refusal(refused: list[str]) -> str:
    """Tailscale's and Headscale's wording, with Go's list formatting: `requested tags [tag:a tag:b] ...`."""
    named = " ".join(t[:64] for t in refused[:MAX_TAGS_NAMED])
    more = f" (and {len(refused) - MAX_TAGS_NAMED} more)" if len(refused) > MAX_TAGS_NAMED else ""
    return f"requested tags [{named}]{more} are invalid or not permitted"


def auth_id_from_followup(url: str) -> str:
    """The auth id at the end of a followup URL (`.../register/<id>`), or "" when it is not one of ours."""
    tail = url.rstrip("/").rsplit("/", 1)[-1]
    return tail if tail.startswith(AUTH_ID_PREFIX) else ""
