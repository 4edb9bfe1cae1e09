"""Delta pacing (pyheadscale/mapper/pacing.py): how long a busy stream holds its next message, and the count
of sessions with something pending that it is computed from."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from pyheadscale.mapper.distributor import Distributor, MapSession
from pyheadscale.mapper.pacing import ACTIVE_SECONDS, INITIAL_COST, MAX_COST, MAX_SPACING, Pacing


def test_nothing_pending_means_no_spacing() -> None:
    assert Pacing().spacing() == 0


def test_spacing_grows_with_pending_streams_up_to_its_bound() -> None:
    pacing = Pacing()
    pacing.pending = 10
    ten = pacing.spacing()
    pacing.pending = 20
    assert pacing.spacing() == pytest.approx(2 * ten)
    pacing.pending = 10**6
    assert pacing.spacing() == MAX_SPACING


def test_only_a_stream_whose_change_came_right_after_its_last_message_is_held() -> None:
    pacing = Pacing()
    pacing.pending = 10**6  # every stream has something pending
    # The change came a while after the last message: written at once, however busy.
    assert pacing.hold(last_sent=100.0, woken_at=100.0 + ACTIVE_SECONDS, now=101.0) == 0
    # It came right after: held until the spacing has passed since the last message.
    assert pacing.hold(last_sent=100.0, woken_at=100.1, now=100.2) == pytest.approx(MAX_SPACING - 0.2)
    # ... judged by when it came, not by when a loaded loop got round to the stream.
    assert pacing.hold(last_sent=100.0, woken_at=100.1, now=103.0) == pytest.approx(MAX_SPACING - 3.0)
    assert pacing.hold(last_sent=100.0, woken_at=100.1, now=100.0 + MAX_SPACING + 1) == 0
    pacing.pending = 0
    assert pacing.hold(last_sent=100.0, woken_at=100.1, now=100.2) == 0


def test_cost_is_smoothed_and_a_stalled_write_counts_as_the_cap() -> None:
    pacing = Pacing()
    pacing.record(60.0)  # a write that waited a minute on its client's flow control
    assert INITIAL_COST < pacing.cost <= MAX_COST
    for _ in range(500):
        pacing.record(0.0001)
    assert pacing.cost == pytest.approx(0.0001, rel=0.01)


def _builder() -> Any:
    """Enough of a MapBuilder for take_pending: a store that holds no nodes (each take returns None)."""
    return SimpleNamespace(ctx=SimpleNamespace(store=SimpleNamespace(nodes={})))


def _pending_sessions(distributor: Distributor) -> int:
    return sum(s.wake.is_set() for group in distributor.sessions.values() for s in group)


def test_pending_counts_the_sessions_with_something_to_send() -> None:
    builder = _builder()
    distributor = Distributor(builder)
    sessions = [MapSession(node_id, 130) for node_id in range(1, 6)]
    for session in sessions:
        session.want_full()  # as a stream does before it is added
        distributor.add(session)
    assert distributor.pacing.pending == 5
    sessions[0].take_pending(builder)
    sessions[1].take_pending(builder)
    assert distributor.pacing.pending == 3
    sessions[0].peer_patched(9)
    sessions[0].peer_changed(8)  # one session pending is one, however much it holds
    assert distributor.pacing.pending == 4
    sessions[2].close()  # already pending
    distributor.remove(sessions[2])
    distributor.remove(sessions[1])  # not pending
    assert distributor.pacing.pending == _pending_sessions(distributor) == 3
    for session in sessions:
        session.take_pending(builder)
    assert distributor.pacing.pending == 0
    assert sessions[2].pacing is not distributor.pacing  # a removed session counts elsewhere
