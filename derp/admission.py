"""Admission control: asking an HTTP endpoint whether a node key may use this relay.

This is the protocol of derper's ``--verify-client-url``: POST a JSON body
``{"NodePublic": "nodekey:<hex>", "Source": "<client ip>"}`` and expect HTTP
200 with ``{"Allow": true}``.  A control server (such as pyheadscale) answers
from its node table.  The relay asks again about connected clients every so
often (re-verification, ``ClientAdmission``) and closes those refused since.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from collections.abc import Awaitable, Callable

import aiohttp

from pyheadscale.tailkey import NodePublic

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 4 << 10
REVERIFY_CONCURRENCY = 16
"""Admission requests in flight at once while re-verifying connected clients."""

ClientVerifier = Callable[[NodePublic], Awaitable[bool]]
"""Async predicate on a connecting node's public key."""


class Verdict(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    """The URL answered 200 and did not allow the key: the one answer that closes a connected client."""
    UNCLEAR = "unclear"
    """Another HTTP status, or a body that is not a JSON object: refused at login, ignored after."""
    NO_ANSWER = "no answer"
    """Unreachable or timed out."""


class AdmissionController:
    """Calls an admission URL for each connecting client."""

    def __init__(self, url: str, *, fail_open: bool = False, timeout: float = 5.0) -> None:
        self.url = url
        self.fail_open = fail_open
        """Admit clients when the URL cannot be reached (derper's default); refuse otherwise."""
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def allows(self, node_key: NodePublic, source_ip: str) -> bool:
        """Whether a connecting client may log in. Unreachable: ``fail_open``; any unclear answer: no."""
        verdict = await self.verdict(node_key, source_ip)
        return verdict is Verdict.ALLOW or (verdict is Verdict.NO_ANSWER and self.fail_open)

    async def verdict(self, node_key: NodePublic, source_ip: str) -> Verdict:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = {"NodePublic": node_key.text, "Source": source_ip}
        try:
            async with self._session.post(self.url, json=body) as response:
                if response.status != 200:
                    log.info("admission %s for %s: HTTP %d", self.url, node_key.short(), response.status)
                    return Verdict.UNCLEAR
                raw = await response.content.read(MAX_RESPONSE_BYTES)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("admission URL %s unreachable: %s", self.url, exc)
            return Verdict.NO_ANSWER
        try:
            doc = json.loads(raw)
        except ValueError:
            log.warning("admission URL %s returned invalid JSON", self.url)
            return Verdict.UNCLEAR
        if not isinstance(doc, dict):
            return Verdict.UNCLEAR
        # Go decodes JSON field names case-insensitively; match that.
        allow = next((v for k, v in doc.items() if k.lower() == "allow"), None)
        return Verdict.ALLOW if allow is True else Verdict.DENY

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            # Let the connector's transports finish closing before the loop may end.
            await asyncio.sleep(0)


class ClientAdmission:
    """Who may use this relay: the embedder's `verify_client` and the admission URL, either or both, asked
    when a client logs in and again about every connected client each `reverify_interval`."""

    def __init__(
        self,
        verify_client: ClientVerifier | None,
        controller: AdmissionController | None,
        reverify_interval: float | None,
    ) -> None:
        self._verify_client = verify_client
        self._controller = controller
        self._reverify_interval = reverify_interval
        self._reverifier: asyncio.Task[None] | None = None

    async def admits(self, key: NodePublic, source_ip: str) -> bool:
        """Whether a client logging in may; any failure to decide is a no."""
        try:
            if self._verify_client is not None and not await self._verify_client(key):
                return False
            if self._controller is not None and not await self._controller.allows(key, source_ip):
                return False
        except Exception:
            log.exception("derp client verification failed for %s", key.short())
            return False
        return True

    async def still_admits(self, key: NodePublic, source_ip: str) -> bool:
        """Whether a connected client may stay. Only a clear refusal says no: if the admission URL is
        unreachable or answers something else, it stays (a control server restarting must not drop the whole
        region)."""
        try:
            if self._verify_client is not None and not await self._verify_client(key):
                return False
            if self._controller is not None:
                return await self._controller.verdict(key, source_ip) is not Verdict.DENY
        except Exception:
            log.exception("derp client re-verification failed for %s", key.short())
        return True

    def start(
        self,
        connected: Callable[[], list[NodePublic]],
        source_of: Callable[[NodePublic], str | None],
        revoke: Callable[[NodePublic], object],
    ) -> None:
        """Re-verify every interval: `connected` lists the clients to ask about, `source_of` gives one's
        address (None once it has left) and `revoke` closes one refused. Started once; without an interval or
        anything to ask, nothing runs."""
        verifying = self._verify_client is not None or self._controller is not None
        if self._reverifier is None and verifying and self._reverify_interval:
            self._reverifier = asyncio.get_running_loop().create_task(
                self._reverify_forever(self._reverify_interval, connected, source_of, revoke)
            )

    async def _reverify_forever(
        self,
        interval: float,
        connected: Callable[[], list[NodePublic]],
        source_of: Callable[[NodePublic], str | None],
        revoke: Callable[[NodePublic], object],
    ) -> None:
        limit = asyncio.Semaphore(REVERIFY_CONCURRENCY)

        async def check(key: NodePublic) -> None:
            async with limit:
                source = source_of(key)
                if source is not None and not await self.still_admits(key, source):
                    revoke(key)

        while True:
            await asyncio.sleep(interval)
            await asyncio.gather(*(check(k) for k in connected()))

    async def stop(self) -> None:
        """Stop re-verifying (no client is asked about after this)."""
        if self._reverifier is not None:
            self._reverifier.cancel()
            await asyncio.gather(self._reverifier, return_exceptions=True)

    async def close(self) -> None:
        await self.stop()
        if self._controller is not None:
            await self._controller.close()
