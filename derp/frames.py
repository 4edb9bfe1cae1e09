"""DERP wire framing: frame types, limits, and payload encoders/decoders.

Every DERP frame is a one-byte type, a big-endian uint32 payload length, and
the payload.  This module is pure (no I/O) so the same codec serves the
server, the Python client, and the tests.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from pyheadscale.tailkey import KEY_LEN, NONCE_LEN

MAGIC = "DERP🔑".encode()
"""Eight bytes that open the server-key frame, so clients can tell DERP from other protocols."""

FRAME_HEADER_LEN = 5
MAX_PACKET_SIZE = 64 << 10
"""Largest relayed packet body; WireGuard never needs more."""

MAX_FRAME_SIZE = MAX_PACKET_SIZE + 2 * KEY_LEN
"""Largest frame a peer may send us after the handshake (a full ForwardPacket)."""

MAX_CLIENT_INFO_LEN = 256 << 10
"""Bound on the not-yet-authenticated ClientInfo frame, to cap JSON work for strangers."""

MAX_SERVER_INFO_LEN = NONCE_LEN + (1 << 20)
PROTOCOL_VERSION = 2
"""Version 2 carries the sender's key at the start of every RecvPacket frame."""

KEEPALIVE_INTERVAL = 60.0
PING_LEN = 8
MAX_PING_LEN = 1000
"""Pings may grow for extensibility, but anything this large is abuse."""

DISCO_MAGIC = "TS💬".encode()
_DISCO_MIN_LEN = len(DISCO_MAGIC) + KEY_LEN + NONCE_LEN

_HEADER = struct.Struct(">BI")
_RESTARTING = struct.Struct(">II")
_PORT = struct.Struct(">H")


class FrameType(enum.IntEnum):
    """The one-byte type that starts every frame."""

    SERVER_KEY = 0x01
    CLIENT_INFO = 0x02
    SERVER_INFO = 0x03
    SEND_PACKET = 0x04
    RECV_PACKET = 0x05
    KEEP_ALIVE = 0x06
    NOTE_PREFERRED = 0x07
    PEER_GONE = 0x08
    PEER_PRESENT = 0x09
    FORWARD_PACKET = 0x0A
    WATCH_CONNS = 0x10
    CLOSE_PEER = 0x11
    PING = 0x12
    PONG = 0x13
    HEALTH = 0x14
    RESTARTING = 0x15


class PeerGoneReason(enum.IntEnum):
    """Why the server has no path to a peer."""

    DISCONNECTED = 0x00
    NOT_HERE = 0x01


class PeerPresentFlags(enum.IntFlag):
    """Optional byte after a PeerPresent endpoint describing the peer."""

    NONE = 0
    IS_REGULAR = 1 << 0
    IS_MESH_PEER = 1 << 1
    IS_PROBER = 1 << 2
    NOT_IDEAL = 1 << 3


class ProtocolError(Exception):
    """The peer broke the DERP protocol; its connection should be closed."""


def encode_header(frame_type: int, length: int) -> bytes:
    """Encode a frame header for a payload of ``length`` bytes."""
    return _HEADER.pack(frame_type, length)


def decode_header(header: bytes) -> tuple[int, int]:
    """Split a five-byte frame header into (type, payload length)."""
    if len(header) != FRAME_HEADER_LEN:
        raise ProtocolError(f"frame header must be {FRAME_HEADER_LEN} bytes, got {len(header)}")
    frame_type, length = _HEADER.unpack(header)
    return frame_type, length


def encode_frame(frame_type: int, payload: bytes = b"") -> bytes:
    """Encode a whole frame."""
    return _HEADER.pack(frame_type, len(payload)) + payload


class FrameReader:
    """Splits a byte stream into whole frames, however it was chunked (sans-IO).

    Every complete frame in a chunk is parsed in one pass over it, so a read of
    many small frames costs one await rather than two per frame.  At most one
    partial frame is held between chunks, completed from the head of the next
    chunk (the rest of that chunk is not copied); its announced length is checked
    against ``max_payload`` as soon as its header is complete, before any of the
    payload is buffered, so a peer cannot make us hold more than one frame.
    """

    __slots__ = ("_max_payload", "_needed", "_partial")

    def __init__(self, max_payload: int) -> None:
        self._max_payload = max_payload
        self._partial = bytearray()
        self._needed = FRAME_HEADER_LEN
        """Bytes the partial frame must reach before it is worth parsing again."""

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held until more arrive."""
        return len(self._partial)

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        """Yield (type, payload) of each frame completed by ``data``; ProtocolError at an oversized one."""
        for frame_type, buffer, start, stop in self.feed_spans(data):
            yield frame_type, buffer[start:stop]

    def feed_spans(self, data: bytes) -> Iterator[tuple[int, bytes, int, int]]:
        """Like :meth:`feed`, each frame as (type, buffer, start, stop): its payload is buffer[start:stop].

        ``buffer`` is ``data`` itself, or for the frame begun in an earlier chunk that frame's own bytes, so a
        relay can look at frames, and copy a run of them at once, without slicing each one out.
        """
        end = len(data)
        offset = 0
        if self._partial:
            offset = self._fill_partial(data)
            if offset < 0:
                return  # all of data went into the partial frame, which is still short
            frame = bytes(self._partial)
            self._partial.clear()
            self._needed = FRAME_HEADER_LEN
            yield frame[0], frame, FRAME_HEADER_LEN, len(frame)
        unpack = _HEADER.unpack_from
        max_payload = self._max_payload
        while end - offset >= FRAME_HEADER_LEN:
            frame_type, length = unpack(data, offset)
            if length > max_payload:
                raise ProtocolError(f"frame of {length} bytes exceeds the limit of {max_payload}")
            start = offset + FRAME_HEADER_LEN
            stop = start + length
            if stop > end:
                self._needed = stop - offset
                self._partial += memoryview(data)[offset:]
                return
            yield frame_type, data, start, stop
            offset = stop
        if offset < end:
            self._partial += memoryview(data)[offset:]

    def _fill_partial(self, data: bytes) -> int:
        """Complete the held frame from the head of ``data``: the offset after it, or -1 if still short."""
        partial = self._partial
        view = memoryview(data)
        offset = 0
        while True:
            take = self._needed - len(partial)
            partial += view[offset : offset + take]
            offset += take
            if len(partial) < self._needed:
                return -1
            if self._needed > FRAME_HEADER_LEN:
                return offset
            # The header is complete: now the frame's length is known (and checked before it is buffered).
            _, length = _HEADER.unpack_from(partial)
            if length > self._max_payload:
                raise ProtocolError(f"frame of {length} bytes exceeds the limit of {self._max_payload}")
            self._needed = FRAME_HEADER_LEN + length
            if not length:
                return offset


def rewrite_as_recv_packets(frames_buffer: bytearray | memoryview, source: bytes) -> None:
    """Turn whole SendPacket frames, back to back in ``frames_buffer``, into the RecvPacket frames that
    deliver them from ``source``, in place.

    The two frames have the same length: the type byte changes and the source key takes the place of the
    destination key, so a relay can copy a run of SendPacket frames once and patch 33 bytes of each.
    """
    _require_key(source, "source key")
    end = len(frames_buffer)
    offset = 0
    unpack = _HEADER.unpack_from
    send_packet = int(FrameType.SEND_PACKET)
    recv_packet = int(FrameType.RECV_PACKET)
    while offset < end:
        frame_type, length = unpack(frames_buffer, offset)
        if frame_type != send_packet or length < KEY_LEN or offset + FRAME_HEADER_LEN + length > end:
            raise ValueError(f"not a whole SendPacket frame at offset {offset}")
        frames_buffer[offset] = recv_packet
        start = offset + FRAME_HEADER_LEN
        frames_buffer[start : start + KEY_LEN] = source
        offset = start + length


def looks_like_disco(packet: bytes) -> bool:
    """Whether a relayed packet is a disco (path discovery) message, which gets queue priority."""
    return len(packet) >= _DISCO_MIN_LEN and packet.startswith(DISCO_MAGIC)


def _require_key(key: bytes, what: str) -> None:
    if len(key) != KEY_LEN:
        raise ValueError(f"{what} must be {KEY_LEN} bytes, got {len(key)}")


# Messages a server sends to a client.  Decoded by the client; the server
# encodes them with the encode_* helpers below.


@dataclass(frozen=True, slots=True)
class ReceivedPacket:
    source: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class PeerGone:
    peer: bytes
    reason: PeerGoneReason


@dataclass(frozen=True, slots=True)
class PeerPresent:
    peer: bytes
    endpoint: tuple[str, int] | None
    flags: PeerPresentFlags


@dataclass(frozen=True, slots=True)
class KeepAlive:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    data: bytes


@dataclass(frozen=True, slots=True)
class Health:
    problem: str
    """Empty means the earlier problem is resolved."""


@dataclass(frozen=True, slots=True)
class ServerRestarting:
    reconnect_in: float
    """Seconds the client should wait before reconnecting."""
    try_for: float
    """Seconds the client should keep trying before giving up."""


ServerMessage = ReceivedPacket | PeerGone | PeerPresent | KeepAlive | Ping | Pong | Health | ServerRestarting


# Client-to-server payloads.


def encode_send_packet(destination: bytes, data: bytes) -> bytes:
    _require_key(destination, "destination key")
    if len(data) > MAX_PACKET_SIZE:
        raise ValueError(f"packet of {len(data)} bytes exceeds {MAX_PACKET_SIZE}")
    return encode_header(FrameType.SEND_PACKET, KEY_LEN + len(data)) + destination + data


def decode_send_packet(payload: bytes) -> tuple[bytes, bytes]:
    """Return (destination key, packet)."""
    if len(payload) < KEY_LEN:
        raise ProtocolError("short SendPacket frame")
    if len(payload) - KEY_LEN > MAX_PACKET_SIZE:
        raise ProtocolError("SendPacket body exceeds the maximum packet size")
    return payload[:KEY_LEN], payload[KEY_LEN:]


def encode_forward_packet(source: bytes, destination: bytes, data: bytes) -> bytes:
    _require_key(source, "source key")
    _require_key(destination, "destination key")
    if len(data) > MAX_PACKET_SIZE:
        raise ValueError(f"packet of {len(data)} bytes exceeds {MAX_PACKET_SIZE}")
    header = encode_header(FrameType.FORWARD_PACKET, 2 * KEY_LEN + len(data))
    return header + source + destination + data


def decode_forward_packet(payload: bytes) -> tuple[bytes, bytes, bytes]:
    """Return (source key, destination key, packet)."""
    if len(payload) < 2 * KEY_LEN:
        raise ProtocolError("short ForwardPacket frame")
    if len(payload) - 2 * KEY_LEN > MAX_PACKET_SIZE:
        raise ProtocolError("ForwardPacket body exceeds the maximum packet size")
    return payload[:KEY_LEN], payload[KEY_LEN : 2 * KEY_LEN], payload[2 * KEY_LEN :]


def encode_note_preferred(preferred: bool) -> bytes:
    return encode_frame(FrameType.NOTE_PREFERRED, b"\x01" if preferred else b"\x00")


def decode_note_preferred(payload: bytes) -> bool:
    if len(payload) != 1:
        raise ProtocolError("NotePreferred frame must carry exactly one byte")
    return payload != b"\x00"


def encode_watch_conns() -> bytes:
    return encode_frame(FrameType.WATCH_CONNS)


def encode_close_peer(peer: bytes) -> bytes:
    _require_key(peer, "peer key")
    return encode_frame(FrameType.CLOSE_PEER, peer)


def decode_close_peer(payload: bytes) -> bytes:
    if len(payload) != KEY_LEN:
        raise ProtocolError("ClosePeer frame must carry exactly one key")
    return payload


def encode_ping(data: bytes) -> bytes:
    if len(data) != PING_LEN:
        raise ValueError(f"ping data must be {PING_LEN} bytes")
    return encode_frame(FrameType.PING, data)


def decode_ping(payload: bytes) -> bytes:
    """Return the eight bytes to echo; trailing bytes are tolerated for future use."""
    if len(payload) < PING_LEN:
        raise ProtocolError("short Ping frame")
    if len(payload) > MAX_PING_LEN:
        raise ProtocolError("Ping frame too large")
    return payload[:PING_LEN]


def encode_pong(data: bytes) -> bytes:
    if len(data) != PING_LEN:
        raise ValueError(f"pong data must be {PING_LEN} bytes")
    return encode_frame(FrameType.PONG, data)


# Server-to-client payloads.


def encode_recv_packet(source: bytes, data: bytes) -> bytes:
    _require_key(source, "source key")
    return encode_header(FrameType.RECV_PACKET, KEY_LEN + len(data)) + source + data


def recv_packet_header(data_len: int) -> bytes:
    """The header of a RecvPacket frame whose packet is ``data_len`` bytes: the frame is this, the
    source key and the packet, which a writer can gather without concatenating them first."""
    return _HEADER.pack(FrameType.RECV_PACKET, KEY_LEN + data_len)


def encode_keep_alive() -> bytes:
    return encode_frame(FrameType.KEEP_ALIVE)


def encode_peer_gone(peer: bytes, reason: PeerGoneReason) -> bytes:
    _require_key(peer, "peer key")
    return encode_frame(FrameType.PEER_GONE, peer + bytes([reason]))


def encode_peer_present(peer: bytes, endpoint: tuple[str, int] | None, flags: PeerPresentFlags) -> bytes:
    """Encode PeerPresent: key, 16-byte IP (v4-mapped for IPv4), port, flags."""
    _require_key(peer, "peer key")
    ip16 = bytes(16)
    port = 0
    if endpoint is not None:
        address = ipaddress.ip_address(endpoint[0])
        if isinstance(address, ipaddress.IPv4Address):
            ip16 = bytes(10) + b"\xff\xff" + address.packed
        else:
            ip16 = address.packed
        port = endpoint[1]
    return encode_frame(FrameType.PEER_PRESENT, peer + ip16 + _PORT.pack(port) + bytes([flags]))


def encode_health(problem: str) -> bytes:
    return encode_frame(FrameType.HEALTH, problem.encode())


def encode_restarting(reconnect_in: float, try_for: float) -> bytes:
    """Encode both durations (seconds) as milliseconds on the wire."""
    return encode_frame(
        FrameType.RESTARTING, _RESTARTING.pack(round(reconnect_in * 1000), round(try_for * 1000))
    )


def _decode_endpoint(ip16: bytes, port_bytes: bytes) -> tuple[str, int] | None:
    (port,) = _PORT.unpack(port_bytes)
    address = ipaddress.IPv6Address(ip16)
    if address.is_unspecified and port == 0:
        return None
    mapped = address.ipv4_mapped
    return (str(mapped if mapped is not None else address), port)


def decode_server_message(frame_type: int, payload: bytes) -> ServerMessage | None:
    """Decode a steady-state server frame; None for frame types a client ignores."""
    if frame_type == FrameType.RECV_PACKET:
        if len(payload) < KEY_LEN:
            raise ProtocolError("short RecvPacket frame")
        return ReceivedPacket(payload[:KEY_LEN], payload[KEY_LEN:])
    if frame_type == FrameType.KEEP_ALIVE:
        return KeepAlive()
    if frame_type == FrameType.PEER_GONE:
        if len(payload) < KEY_LEN:
            raise ProtocolError("short PeerGone frame")
        raw_reason = payload[KEY_LEN] if len(payload) > KEY_LEN else PeerGoneReason.DISCONNECTED
        try:
            reason = PeerGoneReason(raw_reason)
        except ValueError:
            reason = PeerGoneReason.DISCONNECTED
        return PeerGone(payload[:KEY_LEN], reason)
    if frame_type == FrameType.PEER_PRESENT:
        # Older servers send only the key; newer ones may append more than we know.
        if len(payload) < KEY_LEN:
            raise ProtocolError("short PeerPresent frame")
        endpoint = None
        flags = PeerPresentFlags.NONE
        if len(payload) >= KEY_LEN + 18:
            endpoint = _decode_endpoint(payload[KEY_LEN : KEY_LEN + 16], payload[KEY_LEN + 16 : KEY_LEN + 18])
        if len(payload) >= KEY_LEN + 19:
            flags = PeerPresentFlags(payload[KEY_LEN + 18])
        return PeerPresent(payload[:KEY_LEN], endpoint, flags)
    if frame_type == FrameType.PING:
        return Ping(decode_ping(payload))
    if frame_type == FrameType.PONG:
        if len(payload) < PING_LEN:
            raise ProtocolError("short Pong frame")
        return Pong(payload[:PING_LEN])
    if frame_type == FrameType.HEALTH:
        return Health(payload.decode(errors="replace"))
    if frame_type == FrameType.RESTARTING:
        if len(payload) < _RESTARTING.size:
            raise ProtocolError("short Restarting frame")
        reconnect_ms, try_ms = _RESTARTING.unpack(payload[: _RESTARTING.size])
        return ServerRestarting(reconnect_ms / 1000, try_ms / 1000)
    return None
