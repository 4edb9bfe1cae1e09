"""The change feed: the one ordered path from state mutations to everything that acts on them.

A mutation returns the `Change` values it caused (state/mutations.py: `Outcome`); the mutation runner hands
them to the feed before the next mutation starts, and the feed calls each subscriber (the map distributor,
the DERP relay's revocation, SSH check bookkeeping, the HA prober) with each change in turn. So every
subscriber sees every change, in the order the mutations happened, after the store and the policy engine
already reflect it. Subscribers only read: none writes state or publishes from inside a delivery. A change
published while one is being delivered (a subscriber breaking that rule, or a timer racing) is queued
behind it, never delivered out of order.

Changes made elsewhere enter the same way. The database is the source of truth and the in-memory store a
cache of it; when several servers share one PostgreSQL, a server that commits a mutation would announce its
changes (a NOTIFY naming each change), and every other server would reload the rows named into its store and
publish the same `Change` values here. Subscribers cannot tell a local change from a remote one, so nothing
downstream needs to know there is more than one server. (Only the single-server path exists today.)
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable

from pyheadscale.state.changes import Change

log = logging.getLogger(__name__)

Subscriber = Callable[[Change], None]


class ChangeFeed:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._queue: deque[Change] = deque()
        self._delivering = False

    def subscribe(self, subscriber: Subscriber) -> None:
        """Deliver every later change to `subscriber`, after those subscribed before it."""
        self._subscribers.append(subscriber)

    def publish(self, changes: Iterable[Change]) -> None:
        """Deliver `changes` in order to every subscriber; a subscriber that fails is logged and skipped."""
        self._queue.extend(changes)
        if self._delivering:
            return
        self._delivering = True
        try:
            while self._queue:
                change = self._queue.popleft()
                for subscriber in self._subscribers:
                    try:
                        subscriber(change)
                    except Exception:
                        log.exception("change subscriber failed on %s", change)
        finally:
            self._delivering = False
