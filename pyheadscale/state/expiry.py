"""Timers that announce the moment a node's key expires.

Requests are judged against the clock when they arrive, so an expired node is refused at once whatever these
timers do; a timer exists for what has no request to hang on: the node's open map streams (they get a last
self-update and close), its peers' view of it, and its DERP connections. One timer per node with a future
expiry, set again only when that expiry changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from pyheadscale.state.names import now


class ExpiryTimers:
    def __init__(self, on_expired: Callable[[int, datetime], None]) -> None:
        self._on_expired = on_expired
        self._timers: dict[int, tuple[datetime, asyncio.TimerHandle]] = {}

    def watch(self, node_id: int, expiry: datetime | None) -> None:
        """Call `on_expired(node_id, expiry)` once the clock passes `expiry` (None: never)."""
        current = self._timers.get(node_id)
        if current is not None:
            if current[0] == expiry:
                return
            self.stop(node_id)
        if expiry is None:
            return
        delay = (expiry - now()).total_seconds()
        if delay <= 0:
            return
        handle = asyncio.get_running_loop().call_later(delay, self._fire, node_id, expiry)
        self._timers[node_id] = (expiry, handle)

    def stop(self, node_id: int) -> None:
        entry = self._timers.pop(node_id, None)
        if entry is not None:
            entry[1].cancel()

    def close(self) -> None:
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def _fire(self, node_id: int, expiry: datetime) -> None:
        entry = self._timers.get(node_id)
        if entry is None or entry[0] != expiry:
            return
        del self._timers[node_id]
        if now() < expiry:  # the loop's monotonic clock ran ahead of the wall clock
            self.watch(node_id, expiry)
            return
        self._on_expired(node_id, expiry)
