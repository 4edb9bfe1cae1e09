"""Presence: which nodes have a map stream open, and since when.

A node is online while at least one of its map streams is open (a client may hold two for a moment while it
reconnects); only the first opening and the last closing change anything others see. Nothing here is
persisted: after a restart every node is offline until it connects again.
"""

from __future__ import annotations

import time


class Presence:
    def __init__(self) -> None:
        self._streams: dict[int, int] = {}
        self._since: dict[int, float] = {}
        self._last = 0.0

    def is_online(self, node_id: int) -> bool:
        return node_id in self._streams

    def online_since(self, node_id: int) -> float | None:
        """When (time.monotonic) the node's current online period began; None while it is offline. Two
        periods never share a value, so it also names the period."""
        return self._since.get(node_id)

    def opened(self, node_id: int) -> bool:
        """A map stream opened; True when that brought the node online."""
        count = self._streams.get(node_id, 0) + 1
        self._streams[node_id] = count
        if count == 1:
            # Strictly increasing, so no two online periods (of any node) share a stamp.
            self._last = max(time.monotonic(), self._last + 1e-6)
            self._since[node_id] = self._last
        return count == 1

    def closed(self, node_id: int) -> bool:
        """A map stream closed; True when that took the node offline."""
        count = self._streams.get(node_id, 0) - 1
        if count > 0:
            self._streams[node_id] = count
            return False
        self._streams.pop(node_id, None)
        return self._since.pop(node_id, None) is not None

    def forget(self, node_id: int) -> None:
        """The node is gone (deleted): its streams are being closed and count for nothing."""
        self._streams.pop(node_id, None)
        self._since.pop(node_id, None)
