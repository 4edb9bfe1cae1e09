"""Ephemeral nodes: deleted once they have been offline for `node.ephemeral.inactivity_timeout`.

A timer per offline ephemeral node, cancelled when it connects again. At start every ephemeral node gets one:
it was offline when the server went down, or it reconnects before the timer fires.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from pyheadscale import audit

log = logging.getLogger(__name__)


class EphemeralReaper:
    def __init__(
        self, delete_if_offline: Callable[[int], Coroutine[Any, Any, bool]], timeout: timedelta
    ) -> None:
        """`delete_if_offline(node_id)` deletes the node if it still exists and is offline (True if so)."""
        self._delete_if_offline = delete_if_offline
        self.timeout = timeout
        self._timers: dict[int, asyncio.TimerHandle] = {}

    def went_offline(self, node_id: int) -> None:
        loop = asyncio.get_running_loop()
        self._timers[node_id] = loop.call_later(
            self.timeout.total_seconds(), lambda: loop.create_task(self._expired(node_id))
        )

    def stop(self, node_id: int) -> None:
        """The node came online or was deleted: no timer for it."""
        timer = self._timers.pop(node_id, None)
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    async def _expired(self, node_id: int) -> None:
        audit.actor.set("system")
        self._timers.pop(node_id, None)
        if await self._delete_if_offline(node_id):
            log.info("deleted ephemeral node %d after %s offline", node_id, self.timeout)
