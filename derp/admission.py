"""Admission control: asking an HTTP endpoint whether a node key may use this relay.

This is the protocol of derper's ``--verify-client-url``: POST a JSON body
``{"NodePublic": "nodekey:<hex>", "Source": "<client ip>"}`` and expect HTTP
200 with ``{"Allow": true}``.  A control server (such as pyheadscale) answers
from its node table.  The relay asks again about connected clients every so
often (re-verification, see ``DerpServer``) and closes those refused since.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging

import aiohttp

from pyheadscale.tailkey import NodePublic

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 4 << 10


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
