"""Issue 8 point 7: pending interactive logins are bounded per machine and per source, and a flood cannot
lock a real login out."""

from __future__ import annotations

import pytest

from pyheadscale.auth.interactive import PendingLogins
from pyheadscale.tailkey import NodePrivate
from tests.live_server import LiveServer


def mkey(i: int) -> str:
    return f"mkey:{i:064x}"


NODE = "nodekey:" + "1" * 64


async def test_one_pending_login_per_machine_key() -> None:
    logins = PendingLogins()
    first = logins.start(mkey(1), NODE, {"Hostname": "a"}, source="192.0.2.1")
    second = logins.start(mkey(1), NODE, {"Hostname": "a"}, source="192.0.2.1")
    assert len(logins) == 1 and logins.get(first.auth_id) is None
    assert first.outcome.done() and first.outcome.result() is None  # its waiter is told to start over
    assert logins.for_machine(mkey(1)) is second


async def test_per_source_limit() -> None:
    logins = PendingLogins(max_pending=1000, max_per_source=4)
    for i in range(4):
        logins.start(mkey(i), NODE, {}, source="192.0.2.1")
    with pytest.raises(OverflowError, match="from your address"):
        logins.start(mkey(99), NODE, {}, source="192.0.2.1")
    logins.start(mkey(100), NODE, {}, source="198.51.100.1")
    assert len(logins) == 5


async def test_flood_never_locks_a_real_login_out() -> None:
    logins = PendingLogins(max_pending=100, max_per_source=10)
    for src in range(10):  # the table full, from ten attacking addresses
        for i in range(10):
            logins.start(mkey(src * 100 + i), NODE, {}, source=f"203.0.113.{src}")
    real = logins.start(mkey(5000), NODE, {"Hostname": "laptop"}, source="198.51.100.9")
    # The attackers keep going, from their own addresses and from new ones: the real login survives.
    refused = 0
    for round_ in range(5):
        for src in range(10):
            try:
                logins.start(mkey(9000 + round_ * 10 + src), NODE, {}, source=f"203.0.113.{src}")
            except OverflowError:
                refused += 1
    assert refused >= 40  # each address is held to its 10
    for src in range(50):
        logins.start(mkey(10_000 + src), NODE, {}, source=f"192.0.2.{src}")
    assert len(logins) == 100
    assert logins.get(real.auth_id) is real


async def test_interactive_flood_over_the_wire(start_live: object) -> None:
    """One connection, many machine keys' worth of logins: capped per source, and a login from elsewhere
    still gets its AuthURL."""
    live: LiveServer = await start_live(  # type: ignore[operator]
        limits={
            "logins": {"max_pending_per_source": 5},
            "rate": {"registrations": {"per_second": 1000, "burst": 1000}},
        }
    )
    client = await live.client()
    answers = [await client.register(NodePrivate.generate(), hostname="flood") for _ in range(20)]
    # One machine key: each new login replaces its previous one.
    assert all(a["AuthURL"] for a in answers)
    assert len(live.server.logins) == 1
    flooders = [await live.client() for _ in range(8)]
    refused = []
    for flooder in flooders:
        answer = await flooder.register(NodePrivate.generate(), hostname="flood")
        refused.append(bool(answer["Error"]))
    assert len(live.server.logins) == 5 and refused.count(True) == 4
    assert "from your address" in answer["Error"]


async def test_an_ipv6_site_is_held_to_a_few_sources_worth() -> None:
    """One /48 holds 65,536 /64s: it may not spread a flood over them."""
    from pyheadscale.auth.interactive import SITE_FACTOR
    from pyheadscale.ratelimit import source_of

    logins = PendingLogins(max_pending=1000, max_per_source=4)
    started = refused = 0
    for subnet in range(100):
        try:
            logins.start(mkey(subnet), NODE, {}, source=source_of(f"2001:db8:0:{subnet:x}::1"))
            started += 1
        except OverflowError as exc:
            assert "2001:db8::/48" in str(exc)
            refused += 1
    assert started == SITE_FACTOR * 4 and refused == 100 - started
    logins.start(mkey(5000), NODE, {}, source=source_of("2001:db8:1::1"))  # another site is unaffected
