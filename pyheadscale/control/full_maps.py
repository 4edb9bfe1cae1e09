"""Full maps are built one at a time, in the order streams asked for them, each in a loop turn of its own.

A full map is O(peers) to build and encode. Built wherever each stream's task happened to run, a storm (every
node reconnecting at once, or a policy change reaching every stream) could put hundreds of them in one pass of
the event loop's ready queue, and nothing else (handshakes, registrations, reads, keep-alives) ran until the
pass ended. Taking turns here, each turn starting after a yield, lets the loop poll its sockets between any
two full maps, and serves them first come, first served.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class FullMapTurns:
    """A FIFO of streams waiting to build a full map; `waiting` is how many are queued (a metric's worth)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()  # wakes its waiters in the order they came
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold the turn for building and encoding only; the write, which waits on the client, comes after."""
        self.waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self.waiting -= 1
        try:
            # Even with no one waiting: let the loop poll its sockets before this map's build starts.
            await asyncio.sleep(0)
            yield
        finally:
            self._lock.release()
