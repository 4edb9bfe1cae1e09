"""The server's side of logins in flight at the provider: state, nonce and PKCE verifier, by state.

A session is created when a registration link sends the browser to the provider and is consumed by the
callback that comes back with its state, so a state works once: a replayed or forged callback finds nothing.
Each session is bound to the pending login (auth id) it was started for. Sessions live as long as a pending
login can, and their number is bounded so unauthenticated link visits cannot grow memory without limit.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from authlib.oauth2.rfc7636 import create_s256_code_challenge

from pyheadscale.auth.interactive import LIFETIME

MAX_SESSIONS = 10_000
# Long enough that a state cannot be guessed, and never shorter than the prefix the cookie name uses.
_TOKEN_BYTES = 32
COOKIE_PREFIX = "pyhs_oidc_"
_COOKIE_STATE_CHARS = 12


@dataclass(frozen=True, slots=True)
class LoginSession:
    auth_id: str
    state: str = field(default_factory=lambda: secrets.token_urlsafe(_TOKEN_BYTES))
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(_TOKEN_BYTES))
    code_verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    created: float = field(default_factory=time.monotonic)

    def code_challenge(self, method: str) -> str:
        return create_s256_code_challenge(self.code_verifier) if method == "S256" else self.code_verifier

    @property
    def cookie_name(self) -> str:
        return cookie_name(self.state)


def cookie_name(state: str) -> str:
    """The browser cookie that proves a callback comes back to the browser that started the login.

    Named after the state so that several logins started in one browser do not overwrite each other's cookie.
    """
    return COOKIE_PREFIX + "".join(c for c in state[:_COOKIE_STATE_CHARS] if c.isalnum())


class LoginSessions:
    def __init__(self) -> None:
        self._sessions: OrderedDict[str, LoginSession] = OrderedDict()

    def begin(self, auth_id: str) -> LoginSession:
        self._prune()
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.popitem(last=False)
        session = LoginSession(auth_id)
        self._sessions[session.state] = session
        return session

    def peek(self, state: str) -> LoginSession | None:
        self._prune()
        return self._sessions.get(state)

    def take(self, state: str) -> LoginSession | None:
        """The session for this state, removed: the state cannot be used again."""
        self._prune()
        return self._sessions.pop(state, None)

    def _prune(self) -> None:
        cutoff = time.monotonic() - LIFETIME
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.created > cutoff:
                break
            self._sessions.popitem(last=False)
