"""The server's side of logins in flight at the provider, one per browser and pending login.

A browser is known by a random cookie (`BROWSER_COOKIE`) that pyheadscale gives it on its first visit to a
registration link. Its session for that link holds the state, nonce and PKCE verifier of the round trip to the
provider and, once the provider has identified the person, their claims and the anti-CSRF token the
confirmation page must post back. Sessions are kept under the pending login they belong to:

- a browser visiting the same link again gets its own session back (renewed in place when its state was
  already used), so reloading a link never adds a session;
- a login holds at most `MAX_BROWSERS_PER_LOGIN` browsers' sessions and a further browser is refused, so no
  client can push out anyone else's session, and the total is bounded by the number of pending logins;
- a state works once: the callback takes it, so a replayed or forged callback finds nothing.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from authlib.oauth2.rfc7636 import create_s256_code_challenge

from pyheadscale.auth.interactive import LIFETIME
from pyheadscale.auth.oidc_claims import Claims

BROWSER_COOKIE = "pyhs_oidc_browser"
MAX_BROWSERS_PER_LOGIN = 4
_TOKEN_BYTES = 32
# What a browser id we issued looks like; any other cookie value is ignored and replaced.
_BROWSER_ID = re.compile(r"[A-Za-z0-9_-]{43}")
# Sweep sessions of finished logins when this many are held (doubling after each sweep: amortised O(1)).
_FIRST_SWEEP = 1024


def _token() -> str:
    return secrets.token_urlsafe(_TOKEN_BYTES)


def new_browser_id() -> str:
    return _token()


def valid_browser_id(value: str | None) -> str | None:
    """The browser id in a cookie, or None when there is none or it is not one we could have issued."""
    return value if value is not None and _BROWSER_ID.fullmatch(value) else None


@dataclass(slots=True)
class LoginSession:
    auth_id: str
    browser: str
    state: str = field(default_factory=_token)
    nonce: str = field(default_factory=_token)
    code_verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    created: float = field(default_factory=time.monotonic)
    # Whether `state` has come back from the provider already (then it is no longer accepted).
    state_used: bool = False
    # Set when the provider has identified the person: who they are, and the token their POST must carry.
    claims: Claims | None = None
    csrf_token: str = ""

    def code_challenge(self, method: str) -> str:
        return create_s256_code_challenge(self.code_verifier) if method == "S256" else self.code_verifier

    def expired(self, now: float) -> bool:
        return now - self.created > LIFETIME


class TooManyBrowsers(Exception):
    """This pending login already has sessions in as many browsers as it may."""


class LoginSessions:
    def __init__(self, login_alive: Callable[[str], bool]) -> None:
        self._login_alive = login_alive
        self._by_login: dict[str, dict[str, LoginSession]] = {}
        self._by_state: dict[str, LoginSession] = {}
        self._next_sweep = _FIRST_SWEEP

    def __len__(self) -> int:
        return sum(len(sessions) for sessions in self._by_login.values())

    def begin(self, auth_id: str, browser: str) -> LoginSession:
        """This browser's session for this login, ready to send to the provider; raises TooManyBrowsers."""
        self._sweep_if_due()
        sessions = self._by_login.setdefault(auth_id, {})
        now = time.monotonic()
        for other in [s for s in sessions.values() if s.expired(now)]:
            self._remove(other)
        session = sessions.get(browser)
        if session is not None and not session.state_used:
            return session
        if session is None and len(sessions) >= MAX_BROWSERS_PER_LOGIN:
            raise TooManyBrowsers(auth_id)
        if session is not None:
            self._remove(session)
        session = LoginSession(auth_id, browser)
        self._by_login.setdefault(auth_id, {})[browser] = session
        self._by_state[session.state] = session
        return session

    def by_state(self, state: str) -> LoginSession | None:
        """The session a provider callback's state belongs to, while that state is unused."""
        session = self._by_state.get(state)
        if session is None or session.expired(time.monotonic()):
            return None
        return session

    def use_state(self, session: LoginSession) -> None:
        """The state has come back: it is not accepted again."""
        session.state_used = True
        self._by_state.pop(session.state, None)

    def identified(self, session: LoginSession, claims: Claims) -> str:
        """The provider vouched for `claims`; the anti-CSRF token the confirmation must post back."""
        session.claims = claims
        session.csrf_token = _token()
        return session.csrf_token

    def awaiting_confirmation(self, auth_id: str, browser: str) -> LoginSession | None:
        session = self._by_login.get(auth_id, {}).get(browser)
        if session is None or session.claims is None or session.expired(time.monotonic()):
            return None
        return session

    def finish(self, session: LoginSession) -> None:
        self._remove(session)

    def _remove(self, session: LoginSession) -> None:
        sessions = self._by_login.get(session.auth_id, {})
        if sessions.get(session.browser) is session:
            del sessions[session.browser]
        if not sessions:
            self._by_login.pop(session.auth_id, None)
        if self._by_state.get(session.state) is session:
            del self._by_state[session.state]

    def _sweep_if_due(self) -> None:
        """Drop the sessions of logins that ended (approved, rejected, expired)."""
        if len(self._by_login) < self._next_sweep:
            return
        now = time.monotonic()
        for auth_id in list(self._by_login):
            alive = self._login_alive(auth_id)
            for session in list(self._by_login.get(auth_id, {}).values()):
                if not alive or session.expired(now):
                    self._remove(session)
        self._next_sweep = max(_FIRST_SWEEP, 2 * len(self._by_login))
