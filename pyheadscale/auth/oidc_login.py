"""OpenID Connect login for waiting machines: `/register/<auth id>` sends the browser to the provider,
`/oidc/callback` shows who the provider vouched for and which machine asks, and `/oidc/confirm` (a POST from
that page) registers the machine to them.

The flow is the authorization code flow with PKCE. The state ties the callback to the pending login it was
started for and, through the browser cookie, to the browser that started it; the nonce ties the ID token to
this very login. The person's claims are checked against the configured allowed domains, users and groups, and
a refusal is a 403 page saying why plus an audit entry. Nothing is written before the person confirms: a
registration link someone else sent cannot register their machine with one click, because the confirmation
names the machine and must come back from this browser with the anti-CSRF token of this login.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from aiohttp import web

from pyheadscale import audit
from pyheadscale.auth import oidc_pages as pages
from pyheadscale.auth.interactive import LIFETIME, PendingLogin, PendingLogins
from pyheadscale.auth.oidc_claims import Claims, refusal, username_candidates
from pyheadscale.auth.oidc_provider import Provider, ProviderError
from pyheadscale.auth.oidc_sessions import (
    BROWSER_COOKIE,
    LoginSession,
    LoginSessions,
    TooManyBrowsers,
    new_browser_id,
    valid_browser_id,
)
from pyheadscale.auth.oidc_tokens import TokenInvalid
from pyheadscale.config import Config
from pyheadscale.control.ssh_action import PendingCheck, SSHChecks
from pyheadscale.state.errors import Conflict, StateError
from pyheadscale.state.ipalloc import AddressExhausted
from pyheadscale.state.models import User
from pyheadscale.state.names import now
from pyheadscale.state.store import Store

log = logging.getLogger(__name__)

CALLBACK_PATH = "/oidc/callback"
CONFIRM_PATH = "/oidc/confirm"
# How much of a client-chosen hostname or OS name a page shows.
_SHOWN_CHARS = 100
PROVIDER_NAME = "oidc"


class OIDCLogin:
    def __init__(
        self, config: Config, store: Store, logins: PendingLogins, ssh_checks: SSHChecks, provider: Provider
    ) -> None:
        self.config = config
        self.oidc = config.oidc
        self.store = store
        self.logins = logins
        self.provider = provider
        self.sessions = LoginSessions(self._pending)
        self.redirect_uri = config.server_url + CALLBACK_PATH
        self._origin = _origin(config.server_url)
        self._secure_cookies = config.server_url.startswith("https://")
        # Two first logins of one person at once must not both create their user.
        self._users_lock = asyncio.Lock()
        # Tailscale SSH checks approved by logging in (see finish_ssh_check).
        self.ssh_checks = ssh_checks

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(CALLBACK_PATH, self.callback)
        app.router.add_post(CONFIRM_PATH, self.confirm)

    async def start(self, request: web.Request, login: PendingLogin | PendingCheck) -> web.StreamResponse:
        """Send the browser to the provider for this pending login or SSH check (with its own session)."""
        try:
            metadata = await self.provider.metadata()
        except ProviderError as exc:
            log.warning("OIDC login for %s cannot start: %s", login.auth_id, exc)
            return pages.page(
                503,
                "Identity provider unavailable",
                "The identity provider cannot be reached right now; try this link again soon.",
            )
        browser = self._browser(request) or new_browser_id()
        try:
            session = self.sessions.begin(login.auth_id, browser)
        except TooManyBrowsers:
            return pages.bad_request(
                429,
                "Too many browsers",
                "This login link has been opened in too many browsers already.",
            )
        params = {
            **self.oidc.extra_params,
            "response_type": "code",
            "client_id": self.oidc.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": " ".join(self.oidc.scope),
            "state": session.state,
            "nonce": session.nonce,
        }
        if self.oidc.pkce.enabled:
            params["code_challenge"] = session.code_challenge(self.oidc.pkce.method)
            params["code_challenge_method"] = self.oidc.pkce.method
        location = self.provider.authorization_url(metadata, params)
        response = web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})
        response.set_cookie(
            BROWSER_COOKIE,
            browser,
            max_age=int(LIFETIME),
            path="/",
            httponly=True,
            samesite="Lax",
            secure=self._secure_cookies,
        )
        return response

    def _browser(self, request: web.Request) -> str | None:
        return valid_browser_id(request.cookies.get(BROWSER_COOKIE))

    async def callback(self, request: web.Request) -> web.StreamResponse:
        """The provider's redirect back: check state and browser, then ask the person to confirm, or say why
        not."""
        state = request.query.get("state", "")
        session = self.sessions.by_state(state) if state else None
        if session is None:
            return pages.bad_request(
                400, "Unknown login", "This login response is unknown, has expired, or was already used."
            )
        if self._browser(request) != session.browser:
            # Not the browser that started this login: someone else's callback link, or a forged one.
            return pages.bad_request(
                403,
                "Login does not match this browser",
                "This login response does not belong to a login started in this browser.",
            )
        self.sessions.use_state(session)
        return await self._finish(request, session)

    async def _finish(self, request: web.Request, session: LoginSession) -> web.Response:
        login = self.logins.get(session.auth_id)
        check = self.ssh_checks.get(session.auth_id)
        if login is None and check is not None:
            return await self.finish_ssh_check(request, session, check)
        if login is None:
            return _expired()
        retry_url = f"{self.config.server_url}/register/{login.auth_id}"
        audit.actor.set(f"oidc:{self.oidc.issuer}")
        if "error" in request.query:
            # Text from the query string: shown escaped, and cut short so it cannot flood the audit log.
            reason = (request.query.get("error_description") or request.query["error"])[:200]
            self._audit_denied(login, f"provider: {reason}")
            return pages.page(
                403,
                "Login not completed",
                f"The identity provider did not log you in: {reason}.",
                retry_url=retry_url,
            )
        code = request.query.get("code", "")
        if not code:
            return pages.bad_request(400, "Malformed login response", "The login response carries no code.")
        try:
            claims = await self._claims(code, session)
        except TokenInvalid as exc:
            log.warning("OIDC login %s: %s", login.auth_id, exc)
            self._audit_denied(login, str(exc))
            return pages.page(
                403,
                "Login refused",
                f"The identity provider's answer did not validate: {exc}.",
                retry_url=retry_url,
            )
        except ProviderError as exc:
            log.warning("OIDC login %s failed at the provider: %s", login.auth_id, exc)
            return pages.page(
                502,
                "Identity provider error",
                f"The login could not be completed: {exc}.",
                retry_url=retry_url,
            )
        audit.actor.set(f"oidc:{claims.identifier}")
        refused = refusal(self.oidc, claims)
        if refused is not None:
            log.info("OIDC login %s refused for %s: %s", login.auth_id, claims.identifier, refused)
            self._audit_denied(login, refused, email=claims.email, groups=claims.groups)
            return pages.refused(refused, retry_url)
        try:
            user_name = self._user_name(claims, self.store.user_by_provider_id(claims.identifier))
        except Conflict as exc:
            return pages.page(500, "Registration failed", f"The machine cannot be registered: {exc}.")
        csrf_token = self.sessions.identified(session, claims)
        account = " ".join(p for p in (claims.name, f"<{claims.email}>" if claims.email else "") if p)
        return pages.confirmation(
            machine_request(login),
            account or claims.identifier,
            user_name,
            CONFIRM_PATH,
            {"auth_id": login.auth_id, "csrf_token": csrf_token},
        )

    async def confirm(self, request: web.Request) -> web.StreamResponse:
        """The confirmation page's POST: only this writes the node, for the browser and login shown it."""
        origin = request.headers.get("Origin")
        if origin is not None and origin != self._origin:
            return pages.bad_request(403, "Confirmation refused", "This confirmation came from another site.")
        form = await request.post()
        auth_id, token = str(form.get("auth_id", "")), str(form.get("csrf_token", ""))
        browser = self._browser(request)
        session = self.sessions.awaiting_confirmation(auth_id, browser) if browser else None
        if session is None or not secrets.compare_digest(token.encode(), session.csrf_token.encode()):
            return pages.bad_request(
                403,
                "Confirmation refused",
                "This confirmation does not belong to a login made in this browser, or it has expired.",
            )
        self.sessions.finish(session)
        login = self.logins.get(auth_id)
        if login is None or session.claims is None:
            return _expired()
        audit.actor.set(f"oidc:{session.claims.identifier}")
        return await self._register(login, session.claims)

    def _pending(self, auth_id: str) -> bool:
        """Whether a login or an SSH check still waits on this auth id (its browser sessions are kept)."""
        if self.logins.get(auth_id) is not None:
            return True
        return self.ssh_checks.get(auth_id) is not None

    async def finish_ssh_check(
        self, request: web.Request, session: LoginSession, check: PendingCheck
    ) -> web.Response:
        """Approve an SSH check for the person who owns its source node, as Headscale does: anyone else
        logging in (or a tagged source, which no person owns) would defeat what the check protects."""
        self.sessions.finish(session)
        code = request.query.get("code", "")
        if "error" in request.query or not code:
            reason = (request.query.get("error_description") or request.query.get("error") or "no code")[:200]
            return pages.page(
                403, "SSH check not approved", f"The identity provider did not log you in: {reason}."
            )
        try:
            claims = await self._claims(code, session)
        except (TokenInvalid, ProviderError) as exc:
            log.warning("OIDC SSH check %s: %s", check.auth_id, exc)
            return pages.page(403, "SSH check not approved", f"The login could not be completed: {exc}.")
        refused = refusal(self.oidc, claims)
        if refused is not None:
            return pages.refused(refused, "")
        user = await self._user_for(claims)
        src = self.store.nodes.get(check.src_id)
        if src is None:
            return pages.bad_request(410, "SSH check expired", "The source node no longer exists.")
        if src.tags or src.user_id is None:
            reason = "the source node is tagged: no person owns it"
        elif src.user_id != user.id:
            reason = "you are not the owner of the SSH source node"
        else:
            self.ssh_checks.approve(check)
            self.store.audit.record(
                "ssh.check", f"node:{check.dst_id}", "approved", src=check.src_id, user=user.id
            )
            return pages.page(200, "SSH session authorized", "You can return to your SSH session.")
        self.store.audit.record(
            "ssh.check", f"node:{check.dst_id}", "denied", src=check.src_id, reason=reason
        )
        return pages.page(403, "SSH check not approved", f"The SSH check was not approved: {reason}.")

    async def _claims(self, code: str, session: LoginSession) -> Claims:
        verifier = session.code_verifier if self.oidc.pkce.enabled else None
        tokens = await self.provider.exchange_code(
            code, redirect_uri=self.redirect_uri, code_verifier=verifier
        )
        id_claims = await self.provider.validate(tokens.id_token, session.nonce)
        userinfo = await self.provider.userinfo(tokens.access_token, str(id_claims["sub"]))
        return Claims.from_tokens(id_claims, userinfo)

    async def _register(self, login: PendingLogin, claims: Claims) -> web.Response:
        try:
            user = await self._user_for(claims)
            if self.logins.get(login.auth_id) is not login:
                return _expired()
            expiry = self._expiry(claims)
            node = await self.logins.approve(self.store, login, user, expiry, method=PROVIDER_NAME)
        except (StateError, AddressExhausted) as exc:
            log.warning("OIDC login %s could not register: %s", login.auth_id, exc)
            return pages.page(500, "Registration failed", f"The machine could not be registered: {exc}.")
        log.info(
            "OIDC login %s registered node %d for user %d (%s)",
            login.auth_id,
            node.id,
            user.id,
            claims.identifier,
        )
        return pages.success(node.given_name, user.display_name or user.email or user.name)

    def _user_name(self, claims: Claims, user: User | None) -> str:
        """The user name for these claims: never one another user holds. A known user keeps its name when
        the one the provider now prefers is taken."""
        for candidate in username_candidates(claims, self.oidc.email_verified_required):
            holder = self.store.user_by_name(candidate)
            if holder is None or (user is not None and holder.id == user.id):
                return candidate
            if user is not None:
                return user.name
        raise Conflict(f"every user name for {claims.identifier} is taken")

    def _email(self, claims: Claims, user: User | None) -> str:
        """The trusted email, unless another user has it: a policy token must never match two users."""
        email = claims.trusted_email(self.oidc.email_verified_required)
        if email and any(
            u.email == email and (user is None or u.id != user.id) for u in self.store.users.values()
        ):
            log.warning("OIDC user %s: %s belongs to another user; not stored", claims.identifier, email)
            return ""
        return email

    async def _user_for(self, claims: Claims) -> User:
        """The user for these claims: created at the first login, refreshed from them at every later one."""
        async with self._users_lock:
            user = self.store.user_by_provider_id(claims.identifier)
            profile = {
                "name": self._user_name(claims, user),
                "display_name": claims.name,
                "email": self._email(claims, user),
                "profile_pic_url": claims.picture,
            }
            if user is None:
                return await self.store.create_user(
                    provider=PROVIDER_NAME, provider_id=claims.identifier, **profile
                )
            return await self.store.update_user_profile(user.id, **profile)

    def _expiry(self, claims: Claims) -> datetime | None:
        """When the node's key expires: at the ID token's expiry if so configured, else after the lifetime the
        configuration gives logins (node.expiry; zero means never)."""
        if self.oidc.use_expiry_from_token and claims.exp is not None:
            return datetime.fromtimestamp(claims.exp, UTC)
        lifetime = self.config.node.expiry
        return now() + lifetime if lifetime.total_seconds() > 0 else None

    def _audit_denied(self, login: PendingLogin, reason: str, **details: object) -> None:
        self.store.audit.record(
            "node.register",
            f"machine:{login.machine_key[5:17]}",
            "denied",
            method=PROVIDER_NAME,
            reason=reason,
            auth_id=login.auth_id,
            hostname=login.hostname,
            **details,
        )


def machine_request(login: PendingLogin) -> pages.MachineRequest:
    """The machine as the confirmation page shows it; everything but the key comes from the client itself."""
    hostinfo = login.hostinfo
    os_name = " ".join(str(hostinfo.get(k) or "") for k in ("OS", "OSVersion")).strip()
    asked_at = datetime.now(UTC) - timedelta(seconds=time.monotonic() - login.created)
    return pages.MachineRequest(
        hostname=login.hostname[:_SHOWN_CHARS],
        os=os_name[:_SHOWN_CHARS],
        fingerprint=login.machine_key[: len("mkey:") + 16],
        asked_at=asked_at,
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _expired() -> web.Response:
    return pages.bad_request(
        410, "Registration expired", "The machine's registration request has expired or was already handled."
    )


async def start_oidc(
    config: Config, store: Store, logins: PendingLogins, ssh_checks: SSHChecks
) -> OIDCLogin | None:
    """The OIDC login when `oidc.issuer` is set. With only_start_if_oidc_is_available (the default) an
    unreachable provider stops the server from starting; otherwise discovery is retried at the first login."""
    if not config.oidc.enabled:
        return None
    secret = await asyncio.to_thread(config.oidc.read_client_secret)
    provider = Provider(config.oidc.issuer, config.oidc.client_id, secret)
    try:
        await provider.metadata()
    except ProviderError as exc:
        if config.oidc.only_start_if_oidc_is_available:
            await provider.close()
            raise ProviderError(
                f"OIDC provider {config.oidc.issuer} is unavailable: {exc} "
                "(set oidc.only_start_if_oidc_is_available: false to start anyway)"
            ) from None
        log.warning(
            "OIDC provider %s is unavailable (%s); logins will retry discovery", config.oidc.issuer, exc
        )
    return OIDCLogin(config, store, logins, ssh_checks, provider)
