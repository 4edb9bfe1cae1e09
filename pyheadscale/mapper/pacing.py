"""How often a busy map stream writes: deltas are spaced so writing them stays a bounded share of the loop.

Every message costs the same framing, encryption and write whatever it holds. In a storm (every reconnect is
an online and an endpoint patch for every peer) a stream writing each change as it comes makes N reconnects
N² messages, and the server spends the storm writing them instead of the full maps the reconnecting nodes
wait for. So after a message a stream waits long enough that every stream with something pending could write
once within DELTA_SHARE of the loop's time: spacing = pending streams x cost of a message / DELTA_SHARE, at
most MAX_SPACING (the bound on the delay a change can get). Only a stream whose change came moments after its
last message (within ACTIVE_SECONDS) waits: in a storm changes keep coming, so every stream is such a one,
while the first change after a quiet spell, even one that reaches every stream, is written at once.
"""

from __future__ import annotations

DELTA_SHARE = 0.25
MAX_SPACING = 5.0
# Only a stream that wrote this recently is held: one change reaching every stream (a join) is one message
# each, and the next change after it is not held for it.
ACTIVE_SECONDS = 0.25
# The cost of a delta message is an average over the last few dozen; one that waited on its client's flow
# control is counted as MAX_COST, so a slow client cannot hold everyone else's spacing up.
SMOOTHING = 0.05
INITIAL_COST = 0.0002
MAX_COST = 0.005


class Pacing:
    """The one spacing all map streams follow; `pending` is how many sessions have something to send."""

    def __init__(self) -> None:
        self.pending = 0
        self.cost = INITIAL_COST

    def record(self, seconds: float) -> None:
        """One delta message took `seconds` to build, encode and hand to its connection."""
        self.cost += SMOOTHING * (min(seconds, MAX_COST) - self.cost)

    def spacing(self) -> float:
        """How long after its last message a busy stream waits before writing the next one."""
        return min(MAX_SPACING, self.pending * self.cost / DELTA_SHARE)

    def hold(self, last_sent: float, woken_at: float, now: float) -> float:
        """How long a stream that last wrote at `last_sent`, and had a change signalled at `woken_at`, waits
        before writing what is pending (all times.monotonic).

        Busy is judged by when the change came, not when the stream got to run: on a loaded loop every
        stream runs long after its signal, and judged by that no stream would ever be held.
        """
        if woken_at - last_sent >= ACTIVE_SECONDS:
            return 0.0
        return max(0.0, last_sent + self.spacing() - now)
