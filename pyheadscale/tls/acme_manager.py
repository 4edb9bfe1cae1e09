"""A certificate for tls_letsencrypt_hostname, kept fresh: from the cache directory, else from the ACME CA.

The main listener's TLS context picks, per handshake (its SNI callback), the current certificate, or the
TLS-ALPN-01 validation certificate while the CA validates one (a handshake to the hostname in that window of
a few seconds gets the validation certificate; the standard library has no hook to choose by the client's
ALPN list). HTTP-01 proofs are served on tls_letsencrypt_listen, which redirects every other request to
https://, as Headscale does. Issuing and renewing (30 days before expiry, like autocert) run in the
background, so a slow or unreachable CA never blocks the start: until the first certificate arrives,
handshakes are refused.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from pyheadscale import private_files
from pyheadscale.background import stop_task
from pyheadscale.config import Config, ConfigError
from pyheadscale.listener import GuardedAppRunner
from pyheadscale.tls import acme_issuer
from pyheadscale.tls.certfiles import base_context

log = logging.getLogger(__name__)

RENEW_BEFORE = timedelta(days=30)
RETRY_AFTER = timedelta(minutes=10)
MAX_SLEEP = timedelta(hours=12)
ACME_TLS_ALPN = "acme-tls/1"
_NAMED_PORTS = {"http": 80, "https": 443}


def listen_address(value: str) -> tuple[str | None, int]:
    """Go's listen form (":http", "0.0.0.0:80", "[::]:8080") as (host or None for every interface, port)."""
    host, _, port = value.rpartition(":")
    number = _NAMED_PORTS.get(port) or (int(port) if port.isdigit() else None)
    if number is None or not 0 < number < 65536:
        raise ConfigError(f"tls_letsencrypt_listen: {value!r} is not host:port (or :http)")
    return host.strip("[]") or None, number


def _context_from_pem(path: Path, pem: bytes, alpn: list[str] | None = None) -> ssl.SSLContext:
    """A server context for a key+chain PEM, written to `path` (0600) first because ssl loads files."""
    private_files.ensure_private_file(path)
    path.write_bytes(pem)
    context = base_context()
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    context.load_cert_chain(str(path))
    return context


class ACMECertificates:
    """Owns the ACME certificate of this server: its TLS context, its cache files and its renewal."""

    def __init__(
        self,
        config: Config,
        *,
        renew_before: timedelta | None = None,
        retry_after: timedelta | None = None,
    ) -> None:
        self.hostname = config.tls_letsencrypt_hostname
        self.challenge_type = config.tls_letsencrypt_challenge_type
        self.directory_url = config.acme_url or acme_issuer.LETSENCRYPT_DIRECTORY
        self.email = config.acme_email
        self.cache_dir = config.path(config.tls_letsencrypt_cache_dir)
        self.listen = listen_address(config.tls_letsencrypt_listen)
        self.server_url = config.server_url
        self.connection_limits = config.limits.connections
        self.renew_before = renew_before or RENEW_BEFORE
        self.retry_after = retry_after or RETRY_AFTER
        if self.challenge_type == "TLS-ALPN-01" and not config.listen_addr.endswith(":443"):
            log.warning(
                "ACME: TLS-ALPN-01 is validated on port 443; listen_addr %s must be reached there",
                config.listen_addr,
            )
        self.context = base_context()
        self.context.sni_callback = self._select
        self.not_after: datetime | None = None
        self.installed = asyncio.Condition()
        self._current: ssl.SSLContext | None = None
        self._alpn: dict[str, ssl.SSLContext] = {}
        self._http01: dict[str, str] = {}
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def cert_path(self) -> Path:
        return self.cache_dir / self.hostname

    async def start(self) -> None:
        """Load a cached certificate and open the HTTP-01 listener; `begin` starts issuing/renewing."""
        try:
            await asyncio.to_thread(private_files.make_private_dir, self.cache_dir)
        except OSError as exc:
            raise ConfigError(f"tls_letsencrypt_cache_dir: cannot create {self.cache_dir}: {exc}") from None
        await asyncio.to_thread(self._load_cached)
        if self.challenge_type == "HTTP-01":
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._http_handler)
            # Open to anyone like listen_addr, so held to the same connection limits.
            self._runner = GuardedAppRunner(app, self.connection_limits, access_log=None)
            await self._runner.setup()
            host, port = self.listen
            try:
                await web.TCPSite(self._runner, host, port, reuse_address=True).start()
            except OSError as exc:
                raise ConfigError(
                    f"tls_letsencrypt_listen: cannot listen on {host or ''}:{port}: {exc}"
                ) from None

    def begin(self) -> None:
        """Start the background loop (after the main listener is up: TLS-ALPN-01 is validated through it)."""
        self._task = asyncio.get_running_loop().create_task(self._keep_fresh())

    async def close(self) -> None:
        await stop_task(self._task)
        if self._runner is not None:
            await self._runner.cleanup()

    # --- the certificate in use ---------------------------------------------------------------------------

    def _select(self, ssl_object: Any, server_name: str | None, _context: ssl.SSLContext) -> int | None:
        validation = self._alpn.get(server_name or "")
        if validation is not None:
            ssl_object.context = validation
            return None
        if self._current is None:
            return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        ssl_object.context = self._current
        return None

    def _load_cached(self) -> None:
        try:
            pem = self.cert_path.read_bytes()
            _key, chain = acme_issuer.split_cached(pem)
            expires = acme_issuer.not_after(chain)
            context = _context_from_pem(self.cert_path, pem)
        except FileNotFoundError:
            return
        except (OSError, ValueError, ssl.SSLError) as exc:
            log.warning("ACME: ignoring the cached certificate %s: %s", self.cert_path, exc)
            return
        self._current, self.not_after = context, expires
        log.info("ACME: using the cached certificate for %s (valid until %s)", self.hostname, expires)

    def _renewal_due(self) -> datetime:
        if self.not_after is None:
            return datetime.now(UTC)
        return self.not_after - self.renew_before

    async def _keep_fresh(self) -> None:
        while True:
            wait = (self._renewal_due() - datetime.now(UTC)).total_seconds()
            if wait > 0:
                await asyncio.sleep(min(wait, MAX_SLEEP.total_seconds()))
                continue
            try:
                context, expires = await asyncio.to_thread(self._obtain)
            except Exception as exc:  # the CA's, the network's or the cache's: retried, never fatal
                log.error("ACME: no certificate for %s from %s: %s", self.hostname, self.directory_url, exc)
                await asyncio.sleep(self.retry_after.total_seconds())
                continue
            self._current, self.not_after = context, expires
            log.info("ACME: certificate for %s installed (valid until %s)", self.hostname, expires)
            async with self.installed:
                self.installed.notify_all()

    def _obtain(self) -> tuple[ssl.SSLContext, datetime]:
        """Issue a certificate (blocking, in a thread) and cache it as autocert does."""
        account_path = self.cache_dir / acme_issuer.ACCOUNT_KEY_FILE
        if not account_path.exists():
            private_files.ensure_private_file(account_path)
            account_path.write_bytes(acme_issuer.new_ec_key_pem())
        issued = acme_issuer.issue(
            directory_url=self.directory_url,
            account_pem=account_path.read_bytes(),
            email=self.email,
            hostname=self.hostname,
            challenge_type=self.challenge_type,
            responder=self,
        )
        return _context_from_pem(self.cert_path, issued.pem), issued.not_after

    # --- acme_issuer.Responder: called from the issuing thread ---------------------------------------------

    def publish_http01(self, path: str, key_authorization: str) -> None:
        self._http01[path] = key_authorization

    def publish_tls_alpn01(self, domain: str, cert_pem: bytes, key_pem: bytes) -> None:
        path = self.cache_dir / f"{domain}+tls-alpn-01"
        try:
            self._alpn[domain] = _context_from_pem(path, key_pem + cert_pem, [ACME_TLS_ALPN])
        finally:
            path.unlink(missing_ok=True)

    def withdraw(self) -> None:
        self._http01.clear()
        self._alpn.clear()

    async def _http_handler(self, request: web.Request) -> web.StreamResponse:
        proof = self._http01.get(request.path)
        if proof is not None:
            return web.Response(text=proof, content_type="application/octet-stream")
        if request.path.startswith("/.well-known/acme-challenge/"):
            raise web.HTTPNotFound()
        raise web.HTTPPermanentRedirect(f"https://{self.hostname}{request.path_qs}")
