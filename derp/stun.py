"""A STUN (RFC 5389) server answering binding requests, so clients learn their public address.

Tailscale clients send a binding request to each DERP region's STUN port and
read their NAT-mapped address from the XOR-MAPPED-ADDRESS in the reply.
Anything that is not a well-formed binding request is silently ignored:
answering junk would make us a reflector.
"""

from __future__ import annotations

import asyncio
import binascii
import ipaddress
import logging
import os
import socket
import struct
from typing import cast

log = logging.getLogger(__name__)

MAGIC_COOKIE = b"\x21\x12\xa4\x42"
HEADER_LEN = 20
TRANSACTION_ID_LEN = 12
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
ATTR_MAPPED_ADDRESS = 0x0001
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_XOR_MAPPED_ADDRESS_ALT = 0x8020
"""Pre-RFC 5389 servers used this code point; Tailscale's parser still accepts it."""
ATTR_SOFTWARE = 0x8022
ATTR_FINGERPRINT = 0x8028
FINGERPRINT_XOR = 0x5354554E
CLIENT_SOFTWARE = b"tailnode"
"""What Tailscale clients name themselves in SOFTWARE; used by :func:`binding_request`."""

_HEADER = struct.Struct(">HH4s12s")
_ATTR_HEADER = struct.Struct(">HH")
_FAMILY_LEN = {0x01: 4, 0x02: 16}


class StunError(ValueError):
    """A packet is not the STUN message we expected."""


def new_transaction_id() -> bytes:
    return os.urandom(TRANSACTION_ID_LEN)


def _fingerprint(message: bytes) -> int:
    return binascii.crc32(message) ^ FINGERPRINT_XOR


def _attributes(body: bytes) -> list[tuple[int, bytes, int]]:
    """Split attributes into (type, value, offset of the attribute in ``body``)."""
    attrs = []
    offset = 0
    while offset < len(body):
        if len(body) - offset < _ATTR_HEADER.size:
            raise StunError("truncated attribute header")
        attr_type, length = _ATTR_HEADER.unpack_from(body, offset)
        start = offset + _ATTR_HEADER.size
        padded = (length + 3) & ~3
        if start + padded > len(body):
            raise StunError("attribute runs past the end of the message")
        attrs.append((attr_type, body[start : start + length], offset))
        offset = start + padded
    return attrs


def _split_message(packet: bytes) -> tuple[int, bytes, bytes]:
    """Validate the header and return (message type, transaction id, attribute bytes)."""
    if len(packet) < HEADER_LEN:
        raise StunError("shorter than a STUN header")
    message_type, length, cookie, transaction_id = _HEADER.unpack_from(packet)
    if message_type & 0xC000 or cookie != MAGIC_COOKIE:
        raise StunError("not a STUN message")
    if length % 4 or HEADER_LEN + length != len(packet):
        raise StunError("STUN length field disagrees with the packet")
    return message_type, transaction_id, packet[HEADER_LEN:]


def _check_fingerprint(packet: bytes, attrs: list[tuple[int, bytes, int]]) -> None:
    """A FINGERPRINT, if present, must be last and match the CRC of everything before it."""
    for index, (attr_type, value, offset) in enumerate(attrs):
        if attr_type != ATTR_FINGERPRINT:
            continue
        if index != len(attrs) - 1 or len(value) != 4:
            raise StunError("misplaced or malformed FINGERPRINT")
        covered = packet[: HEADER_LEN + offset]
        if int.from_bytes(value, "big") != _fingerprint(covered):
            raise StunError("FINGERPRINT mismatch")


def parse_binding_request(packet: bytes) -> bytes:
    """Return the transaction ID of a well-formed binding request."""
    message_type, transaction_id, body = _split_message(packet)
    if message_type != BINDING_REQUEST:
        raise StunError("not a binding request")
    _check_fingerprint(packet, _attributes(body))
    return transaction_id


def binding_request(transaction_id: bytes, software: bytes = CLIENT_SOFTWARE) -> bytes:
    """A binding request with SOFTWARE and FINGERPRINT, as Tailscale clients send."""
    padded = software + b"\x00" * (-len(software) % 4)
    software_attr = _ATTR_HEADER.pack(ATTR_SOFTWARE, len(software)) + padded
    length = len(software_attr) + 8
    head = _HEADER.pack(BINDING_REQUEST, length, MAGIC_COOKIE, transaction_id) + software_attr
    return head + _ATTR_HEADER.pack(ATTR_FINGERPRINT, 4) + _fingerprint(head).to_bytes(4, "big")


def _xor_address(transaction_id: bytes, raw_ip: bytes) -> bytes:
    mask = MAGIC_COOKIE + transaction_id
    return bytes(b ^ m for b, m in zip(raw_ip, mask, strict=False))


def binding_response(transaction_id: bytes, address: tuple[str, int]) -> bytes:
    """A binding success response carrying ``address`` in XOR-MAPPED-ADDRESS."""
    ip = ipaddress.ip_address(address[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    family = 0x01 if ip.version == 4 else 0x02
    port = address[1] ^ int.from_bytes(MAGIC_COOKIE[:2], "big")
    value = bytes([0, family]) + port.to_bytes(2, "big") + _xor_address(transaction_id, ip.packed)
    attr = _ATTR_HEADER.pack(ATTR_XOR_MAPPED_ADDRESS, len(value)) + value
    return _HEADER.pack(BINDING_SUCCESS, len(attr), MAGIC_COOKIE, transaction_id) + attr


def _decode_address(value: bytes, transaction_id: bytes | None) -> tuple[str, int]:
    if len(value) < 4 or value[1] not in _FAMILY_LEN:
        raise StunError("malformed address attribute")
    raw = value[4 : 4 + _FAMILY_LEN[value[1]]]
    if len(raw) != _FAMILY_LEN[value[1]]:
        raise StunError("truncated address attribute")
    port = int.from_bytes(value[2:4], "big")
    if transaction_id is not None:
        raw = _xor_address(transaction_id, raw)
        port ^= int.from_bytes(MAGIC_COOKIE[:2], "big")
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), port


def parse_binding_response(packet: bytes) -> tuple[bytes, tuple[str, int]]:
    """Return (transaction ID, mapped address); XOR-MAPPED-ADDRESS wins over MAPPED-ADDRESS."""
    message_type, transaction_id, body = _split_message(packet)
    if message_type != BINDING_SUCCESS:
        raise StunError("not a binding success response")
    attrs = _attributes(body)
    _check_fingerprint(packet, attrs)
    fallback = None
    for attr_type, value, _ in attrs:
        if attr_type in (ATTR_XOR_MAPPED_ADDRESS, ATTR_XOR_MAPPED_ADDRESS_ALT):
            return transaction_id, _decode_address(value, transaction_id)
        if attr_type == ATTR_MAPPED_ADDRESS:
            fallback = _decode_address(value, None)
    if fallback is None:
        raise StunError("response carries no mapped address")
    return transaction_id, fallback


class StunServer(asyncio.DatagramProtocol):
    """Answers binding requests on one UDP socket. Create it with :func:`start_stun_server`."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.answered = 0
        self.ignored = 0

    @property
    def local_address(self) -> tuple[str, int]:
        if self.transport is None:
            raise RuntimeError("STUN server is not running")
        sockname = self.transport.get_extra_info("sockname")
        return str(sockname[0]), int(sockname[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            transaction_id = parse_binding_request(data)
            response = binding_response(transaction_id, (str(addr[0]), int(addr[1])))
        except (StunError, ValueError):
            self.ignored += 1
            return
        if self.transport is not None:
            self.transport.sendto(response, addr)
            self.answered += 1

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from earlier replies (e.g. port unreachable) are not our problem.
        log.debug("stun: %s", exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def start_stun_server(host: str, port: int) -> StunServer:
    """Serve STUN on UDP ``host:port`` (port 0 picks one; see ``local_address``).

    An empty host or ``::`` binds dual-stack where IPv6 is available, else
    all IPv4 addresses.
    """
    loop = asyncio.get_running_loop()
    if host in ("", "::"):
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", port))
        except OSError:
            sock.close()
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("0.0.0.0", port))
        _, protocol = await loop.create_datagram_endpoint(StunServer, sock=sock)
    else:
        _, protocol = await loop.create_datagram_endpoint(StunServer, local_addr=(host, port))
    return protocol
