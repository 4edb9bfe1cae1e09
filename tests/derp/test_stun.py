"""STUN binding codec (checked against RFC 5769 test vectors) and the UDP server."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from derp import stun
from tests.derp.harness import within

RFC5769_TRANSACTION_ID = bytes.fromhex("b7e7a701bc34d686fa87dfae")

# RFC 5769 section 2.1: a request with SOFTWARE, PRIORITY, ICE-CONTROLLED,
# USERNAME, MESSAGE-INTEGRITY and FINGERPRINT.
RFC5769_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "802200105354554e207465737420636c69656e74"
    "002400046e0001ff"
    "80290008932ff9b151263b36"
    "000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)

# RFC 5769 section 2.2: IPv4 response mapping 192.0.2.1:32853.
RFC5769_IPV4_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)

# RFC 5769 section 2.3's SOFTWARE and XOR-MAPPED-ADDRESS (2001:db8:1234:5678:11:2233:4455:6677
# port 32853), without its MESSAGE-INTEGRITY and FINGERPRINT.
RFC5769_IPV6_RESPONSE = bytes.fromhex(
    "010100282112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
)


def test_rfc5769_request_is_accepted_with_its_fingerprint() -> None:
    assert stun.parse_binding_request(RFC5769_REQUEST) == RFC5769_TRANSACTION_ID


def test_rfc5769_request_with_corrupt_fingerprint_is_rejected() -> None:
    with pytest.raises(stun.StunError):
        stun.parse_binding_request(RFC5769_REQUEST[:-1] + b"\x00")


def test_rfc5769_ipv4_response_decodes() -> None:
    assert stun.parse_binding_response(RFC5769_IPV4_RESPONSE) == (
        RFC5769_TRANSACTION_ID,
        ("192.0.2.1", 32853),
    )


def test_rfc5769_ipv6_xor_mapped_address_decodes() -> None:
    assert stun.parse_binding_response(RFC5769_IPV6_RESPONSE) == (
        RFC5769_TRANSACTION_ID,
        ("2001:db8:1234:5678:11:2233:4455:6677", 32853),
    )


@pytest.mark.parametrize(
    "address", [("203.0.113.9", 41641), ("2001:db8::42", 1), ("::ffff:198.51.100.3", 65535)]
)
def test_binding_response_round_trip(address: tuple[str, int]) -> None:
    transaction_id = stun.new_transaction_id()
    response = stun.binding_response(transaction_id, address)
    expected_ip = address[0].removeprefix("::ffff:")
    assert stun.parse_binding_response(response) == (transaction_id, (expected_ip, address[1]))


def test_binding_request_round_trip() -> None:
    transaction_id = stun.new_transaction_id()
    request = stun.binding_request(transaction_id)
    assert stun.parse_binding_request(request) == transaction_id
    assert request[-8:-6] == b"\x80\x28"  # ends in FINGERPRINT, like Tailscale's


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x00\x01",
        bytes(20),  # no magic cookie
        RFC5769_REQUEST[:-4],  # length field now disagrees
        RFC5769_IPV4_RESPONSE,  # a response, not a request
        b"\xc0" + RFC5769_REQUEST[1:],  # top bits set: not STUN
        stun.binding_request(bytes(12))[:20] + b"\x80\x22\x00\x40" + bytes(4),  # attribute overruns
    ],
)
def test_malformed_requests_are_rejected(packet: bytes) -> None:
    with pytest.raises(stun.StunError):
        stun.parse_binding_request(packet)


async def exchange(sock: socket.socket, server_address: tuple[str, int], request: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(sock, request, server_address)
    data, _ = await within(loop.sock_recvfrom(sock, 2048))
    return data


async def test_server_answers_binding_requests_and_ignores_junk() -> None:
    server = await stun.start_stun_server("127.0.0.1", 0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    try:
        for junk in (b"", b"hello", os.urandom(100), RFC5769_IPV4_RESPONSE):
            await asyncio.get_running_loop().sock_sendto(sock, junk, server.local_address)
        transaction_id = stun.new_transaction_id()
        reply = await exchange(sock, server.local_address, stun.binding_request(transaction_id))
        assert stun.parse_binding_response(reply) == (transaction_id, sock.getsockname())
        # The RFC's request (with ICE attributes we don't interpret) is answered too.
        reply = await exchange(sock, server.local_address, RFC5769_REQUEST)
        assert stun.parse_binding_response(reply)[0] == RFC5769_TRANSACTION_ID
        assert server.answered == 2
        assert server.ignored == 4
    finally:
        sock.close()
        server.close()


async def test_server_over_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("this Python was built without IPv6")
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    server = await stun.start_stun_server("::1", 0)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("::1", 0))
    try:
        transaction_id = stun.new_transaction_id()
        reply = await exchange(sock, server.local_address, stun.binding_request(transaction_id))
        assert stun.parse_binding_response(reply) == (transaction_id, ("::1", sock.getsockname()[1]))
    finally:
        sock.close()
        server.close()
