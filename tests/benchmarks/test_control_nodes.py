"""The control benchmark's simulated nodes read what they need of a message: skimming a big one must give
the same answers as decoding it."""

from __future__ import annotations

import json
from typing import Any, cast

from benchmarks.control_nodes import SKIM_BYTES, skim
from pyheadscale.tailcfg.frame import encode_json
from pyheadscale.tailcfg.map_response import MapResponse


def _node(i: int, hostname: str, endpoints: list[str]) -> dict[str, Any]:
    return {"ID": i, "StableID": str(i), "Hostinfo": {"Hostname": hostname}, "Endpoints": endpoints}


def _full(peers: int, **extra: Any) -> bytes:
    message = {
        "Node": _node(0, "self", []),
        "Peers": [_node(i, f"node-{i}", [f"198.51.100.1:{i}"]) for i in range(1, peers + 1)],
    } | extra
    body = encode_json(cast(MapResponse, message))
    assert len(body) >= SKIM_BYTES
    return body


def test_a_big_full_map_is_counted_not_decoded() -> None:
    assert skim(_full(2000)) == {"Node": {}, "PeerCount": 2000}


def test_a_full_map_holding_the_probes_is_still_counted() -> None:
    """Probe markers matter only in deltas; a full map that lists a probe among its peers is counted."""
    body = _full(2000)
    with_probe = body.replace(b'"node-7"', b'"probe-0"').replace(b"198.51.100.1:8", b"192.0.2.1:41641")
    assert skim(with_probe) == {"Node": {}, "PeerCount": 2000}


def test_small_messages_and_deltas_are_decoded_whole() -> None:
    """Deltas, however large, are decoded: the markers a node looks for are in them."""
    small = cast(MapResponse, {"Node": _node(0, "self", []), "Peers": []})
    assert skim(encode_json(small)) == json.loads(encode_json(small))
    delta = encode_json(cast(MapResponse, {"PeersChanged": [_node(i, f"n{i}", []) for i in range(2000)]}))
    assert skim(delta) == json.loads(delta)
