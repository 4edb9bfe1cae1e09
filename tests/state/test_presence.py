"""Presence counts map streams; a router's health verdict holds only for the online period it was made in."""

from __future__ import annotations

from typing import Any, cast

from pyheadscale.state.ha_routes import RouterHealthState
from pyheadscale.state.presence import Presence
from pyheadscale.state.store import Store


class _Store:
    def __init__(self) -> None:
        self.presence = Presence()

    def is_online(self, node_id: int) -> bool:
        return self.presence.is_online(node_id)


def test_only_the_first_stream_opening_and_the_last_closing_change_presence() -> None:
    presence = Presence()
    assert presence.opened(1) is True
    first_period = presence.online_since(1)
    assert presence.opened(1) is False  # a second stream while reconnecting
    assert presence.closed(1) is False
    assert presence.is_online(1) and presence.online_since(1) == first_period
    assert presence.closed(1) is True
    assert not presence.is_online(1) and presence.online_since(1) is None
    assert presence.closed(1) is False  # a stray close of an offline node changes nothing
    presence.opened(1)
    assert presence.online_since(1) != first_period  # each online period has its own stamp


def test_a_silent_router_is_healthy_again_in_its_next_online_period() -> None:
    store: Any = _Store()
    health = RouterHealthState(cast(Store, store))
    store.presence.opened(7)
    health.record({7: False})
    assert not health.is_healthy(7) and health.unhealthy == {7}
    store.presence.closed(7)
    assert health.is_healthy(7) and health.unhealthy == set()
    store.presence.opened(7)  # back, and not yet probed: a fresh start
    assert health.is_healthy(7)
    health.record({7: False})
    assert health.unhealthy == {7}
    health.record({7: True})
    assert health.unhealthy == set()
