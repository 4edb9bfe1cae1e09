"""Keep-alives for every open map stream, from one timer wheel.

A client ends its long poll when it hears nothing for two minutes, so a stream that has been quiet for its
interval (about 50 s, as Headscale's and Tailscale's test server send) gets a KeepAlive message. With one
sleeping timer per stream, each keep-alive woke its stream's task, cancelled and re-armed a timeout and went
through the asynchronous send path: at 10,000 streams about 190 a second, ~0.45 ms of CPU each. Here one task
ticks once a `tick`, takes the streams falling due in that tick from their bucket, and writes each one's
keep-alive straight to its connection (`KeepAliveStream.keep_alive`). A stream that wrote anything since it
was scheduled is simply scheduled again from its last write: only quiet streams cost a send.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Literal, Protocol

from pyheadscale.background import stop_task

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
# The share of its interval a stream may be quiet before it is due: a stream written a little after it was
# scheduled is due one tick later, not a whole interval later.
DUE_FRACTION = 0.98

Outcome = Literal["sent", "busy", "ended"]


class KeepAliveStream(Protocol):
    """What the wheel needs of a map stream."""

    @property
    def last_sent(self) -> float:
        """When (time.monotonic) the stream last wrote a message."""

    def keep_alive(self) -> Outcome:
        """Send the keep-alive now: "sent"; "busy" when it could not go out at once (the stream is writing,
        or its peer is not reading), so the wheel tries again next tick; "ended" when the stream has
        something else to say instead and ends (its node expired), so it needs no more keep-alives."""


class KeepAliveWheel:
    """Schedules each stream's keep-alive in buckets of `tick` seconds, and sends the due ones each tick."""

    def __init__(
        self, interval: float, *, tick: float = TICK_SECONDS, on_sent: Callable[[int], None] | None = None
    ) -> None:
        self.interval = interval
        # A test's short interval still gets several ticks per interval.
        self.tick = min(tick, interval / 10)
        self._on_sent = on_sent
        self._buckets: dict[int, set[KeepAliveStream]] = {}
        self._slot: dict[KeepAliveStream, tuple[int, float]] = {}  # stream -> (its bucket, its own interval)
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._slot)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        await stop_task(self._task)
        self._task = None

    def add(self, stream: KeepAliveStream) -> None:
        """Schedule `stream`'s keep-alives, each after its interval (jittered, so that streams opened
        together, as in a restart storm, do not fall due together) of quiet."""
        interval = self.interval + random.uniform(0, self.interval / 10)
        self._place(stream, stream.last_sent + interval, interval)

    def discard(self, stream: KeepAliveStream) -> None:
        slot = self._slot.pop(stream, None)
        if slot is not None:
            bucket = self._buckets.get(slot[0])
            if bucket is not None:
                bucket.discard(stream)
                if not bucket:
                    del self._buckets[slot[0]]

    def _place(self, stream: KeepAliveStream, due: float, interval: float) -> None:
        key = math.ceil(due / self.tick)
        self._slot[stream] = (key, interval)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = {stream}
        else:
            bucket.add(stream)

    def run_due(self, now: float) -> int:
        """Send the keep-alives due at `now` and schedule the next ones; how many were sent."""
        current = math.floor(now / self.tick)
        due = [key for key in self._buckets if key <= current]
        sent = 0
        for key in sorted(due):
            for stream in self._buckets.pop(key):
                interval = self._slot[stream][1]
                quiet = now - stream.last_sent
                if quiet < interval * DUE_FRACTION:
                    self._place(stream, stream.last_sent + interval, interval)
                    continue
                try:
                    outcome = stream.keep_alive()
                except Exception:
                    # A broken stream is left to its own task to end; it gets no more keep-alives.
                    log.exception("keep-alive failed; the stream gets no more")
                    outcome = "ended"
                if outcome == "sent":
                    sent += 1
                    self._place(stream, now + interval, interval)
                elif outcome == "busy":
                    self._place(stream, now + self.tick, interval)
                else:
                    del self._slot[stream]
        if sent and self._on_sent is not None:
            self._on_sent(sent)
        return sent

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            self.run_due(time.monotonic())
