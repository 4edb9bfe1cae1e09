"""STUN (derp/stun.py): any datagram gives a transaction id / mapped address or StunError, and the server
answers binding requests and ignores everything else without raising."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from derp import stun
from tests.fuzz import bounds
from tests.fuzz.seeds import mutated_bytes

REQUESTS = [stun.binding_request(bytes(range(12))), stun.binding_request(b"\xff" * 12, software=b"x" * 13)]
RESPONSES = [
    stun.binding_response(bytes(12), ("192.0.2.7", 41641)),
    stun.binding_response(b"\x01" * 12, ("2001:db8::7", 3478)),
]
datagrams = st.one_of(mutated_bytes(REQUESTS + RESPONSES), st.binary(max_size=120))


class Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))


@given(datagrams)
@example(REQUESTS[0])
@example(RESPONSES[1])
def test_stun_parsers(packet: bytes) -> None:
    allowed = (stun.StunError,)
    bounds.call("stun.request", stun.parse_binding_request, packet, allowed=allowed)
    bounds.call("stun.response", stun.parse_binding_response, packet, allowed=allowed)


@given(datagrams, st.sampled_from([("192.0.2.9", 5), ("::ffff:198.51.100.2", 65535), ("2001:db8::1", 1)]))
def test_stun_server(packet: bytes, addr: tuple[str, int]) -> None:
    server = stun.StunServer()
    transport = Transport()
    server.transport = transport  # type: ignore[assignment]
    bounds.call("stun.server", server.datagram_received, packet, addr)
    assert server.answered + server.ignored == 1
    for data, _ in transport.sent:
        assert stun.parse_binding_response(data)[0] == stun.parse_binding_request(packet)
