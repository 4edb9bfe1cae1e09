"""Each message a map stream writes is counted under the kind the mapper says it built (full, delta,
keep-alive, revoked), never guessed from its fields: a revoked node's last message holds Node and Peers like a
full map, and is counted as revoked."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tests.live_server import LiveServer


def _sent(live: LiveServer, kind: str) -> float:
    value = live.server.metrics.registry.get_sample_value("pyheadscale_map_messages_total", {"kind": kind})
    return value or 0.0


async def test_message_kinds_counted(live: LiveServer) -> None:
    _, _, ra, rb, b_id = await live.streaming_pair()
    try:
        assert _sent(live, "full") == 2 and _sent(live, "revoked") == 0
        await live.node("c")
        await ra.wait_for(lambda m: bool(m.get("PeersChanged")))
        assert _sent(live, "delta") >= 1
        await ra.wait_for(lambda m: m.get("KeepAlive") is True, within=live.keepalive * 3 + 5)
        assert _sent(live, "keepalive") >= 1
        full_before = _sent(live, "full")
        await live.store.set_expiry(b_id, datetime.now(UTC) - timedelta(minutes=1))
        await rb.ended()
        last = rb.messages[-1]
        assert "Node" in last and "Peers" in last and last["Node"]["Expired"] is True
        assert _sent(live, "revoked") == 1
        assert _sent(live, "full") == full_before
    finally:
        await asyncio.gather(ra.close(), rb.close())
