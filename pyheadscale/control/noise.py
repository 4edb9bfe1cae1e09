"""The TS2021 Noise layer: handshake messages, transport records and their framing.

Tailscale runs `Noise_IK_25519_ChaChaPoly_BLAKE2s` with the prologue "Tailscale Control Protocol v<N>". The
handshake is standard Noise (noise_ik.py holds its state). The transport is not: Tailscale
encodes the ChaCha20-Poly1305 nonce as a *big-endian* 64-bit counter (standard Noise uses little-endian), so
transport records are sealed here with the session keys the handshake produced. Nothing here does I/O: a
`RecordDecoder` turns received bytes, in whatever pieces they arrive, into plaintexts (noise_stream.py reads
and writes them).

Frames on the wire:
  initiation  version(2, BE) | type=1 | length(2, BE) | e(32) | enc(s)(48) | tag(16)
  response    type=2 | length(2, BE) | e(32) | tag(16)
  error       type=3 | length(2, BE) | plaintext hint
  record      type=4 | length(2, BE) | ciphertext (at most 4093 bytes)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from pyheadscale.control import noise_ik
from pyheadscale.tailkey import MachinePrivate, MachinePublic

PROTOCOL_NAME = noise_ik.PROTOCOL_NAME
PROLOGUE_PREFIX = b"Tailscale Control Protocol v"

MSG_INITIATION = 1
MSG_RESPONSE = 2
MSG_ERROR = 3
MSG_RECORD = 4

HEADER_LEN = 3
INITIATION_HEADER_LEN = 5
INITIATION_PAYLOAD_LEN = 32 + 48 + 16
INITIATION_LEN = INITIATION_HEADER_LEN + INITIATION_PAYLOAD_LEN
RESPONSE_PAYLOAD_LEN = 32 + 16
MAX_MESSAGE_SIZE = 4096
MAX_CIPHERTEXT_SIZE = MAX_MESSAGE_SIZE - HEADER_LEN
TAG_SIZE = 16
MAX_PLAINTEXT_SIZE = MAX_CIPHERTEXT_SIZE - TAG_SIZE
_MAX_NONCE = (1 << 64) - 1


class NoiseError(Exception):
    """The peer broke the Noise protocol; the session must end."""


def prologue(version: int) -> bytes:
    return PROLOGUE_PREFIX + str(version).encode()


class TransportCipher:
    """One direction of a Noise transport: a ChaCha20-Poly1305 key and a big-endian nonce counter.

    A cipher that falls out of step with the peer is broken for good, and says why on every later use:
    a record that fails to open (tampered, replayed, reordered) leaves the receive counter behind the peer's,
    and a write that failed (or was cancelled) after sealing leaves the peer's counter behind ours, so every
    later record would be undecryptable and the session has to end.
    """

    __slots__ = ("_aead", "_broken", "_nonce")

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._nonce = 0
        self._broken = ""

    @property
    def broken(self) -> str:
        """Why this cipher may no longer be used, or "" while it is in step with the peer."""
        return self._broken

    def mark_broken(self, reason: str) -> None:
        """Refuse every later record: the peer's counter and ours no longer agree."""
        if not self._broken:
            self._broken = reason

    def _next_nonce(self) -> bytes:
        if self._broken:
            raise NoiseError(f"cipher broken: {self._broken}")
        if self._nonce >= _MAX_NONCE:
            raise NoiseError("cipher exhausted (nonce counter at its limit)")
        nonce = b"\x00\x00\x00\x00" + self._nonce.to_bytes(8, "big")
        self._nonce += 1
        return nonce

    def seal_records(self, plaintext: bytes) -> bytes:
        """Encrypt `plaintext` into as many record frames as it needs."""
        out = bytearray()
        view = memoryview(plaintext)
        while True:
            chunk = view[:MAX_PLAINTEXT_SIZE]
            view = view[MAX_PLAINTEXT_SIZE:]
            sealed = self._aead.encrypt(self._next_nonce(), bytes(chunk), None)
            out += struct.pack(">BH", MSG_RECORD, len(sealed))
            out += sealed
            if not view:
                return bytes(out)

    def open(self, ciphertext: bytes) -> bytes:
        nonce = self._next_nonce()
        try:
            return self._aead.decrypt(nonce, ciphertext, None)
        except InvalidTag as exc:
            self._broken = "a record failed authentication"
            raise NoiseError("record failed authentication (tampered, replayed or out of order)") from exc


@dataclass(slots=True)
class Session:
    """The outcome of a completed handshake."""

    version: int
    peer_static: bytes
    send: TransportCipher
    recv: TransportCipher
    handshake_hash: bytes


def parse_initiation(init: bytes) -> int:
    """Validate an initiation frame's header and return the protocol version it announces."""
    if len(init) != INITIATION_LEN:
        raise NoiseError("wrong handshake initiation size")
    version, msg_type, length = struct.unpack(">HBH", init[:INITIATION_HEADER_LEN])
    if msg_type != MSG_INITIATION:
        raise NoiseError("unexpected handshake message type")
    if length != INITIATION_PAYLOAD_LEN:
        raise NoiseError("wrong handshake initiation length")
    return int(version)


def _session(version: int, outcome: noise_ik.Outcome) -> Session:
    return Session(
        version=version,
        peer_static=outcome.remote_static,
        send=TransportCipher(outcome.send_key),
        recv=TransportCipher(outcome.receive_key),
        handshake_hash=outcome.handshake_hash,
    )


class Responder:
    """The server side of every handshake with one server key (parsed once, not once per client)."""

    __slots__ = ("_responder",)

    def __init__(self, server_key: MachinePrivate) -> None:
        self._responder = noise_ik.Responder(server_key.raw)

    def respond(self, init: bytes) -> tuple[bytes, Session]:
        """Consume a client's initiation frame and return (response frame, session)."""
        version = parse_initiation(init)
        try:
            payload, outcome = self._responder.respond(prologue(version), init[INITIATION_HEADER_LEN:])
        except noise_ik.HandshakeFailed as exc:
            raise NoiseError(
                "handshake initiation did not decrypt (wrong server key or corrupt message)"
            ) from exc
        frame = struct.pack(">BH", MSG_RESPONSE, len(payload)) + payload
        return frame, _session(version, outcome)


def respond(server_key: MachinePrivate, init: bytes) -> tuple[bytes, Session]:
    """Server side, once: consume a client's initiation frame and return (response frame, session)."""
    return Responder(server_key).respond(init)


class Initiator:
    """Client side of the handshake, used by our own TS2021 client."""

    def __init__(self, machine_key: MachinePrivate, server_public: MachinePublic, version: int) -> None:
        self._version = version
        self._handshake = noise_ik.Initiator(machine_key.raw, server_public, prologue(version))

    def initiation(self) -> bytes:
        payload = self._handshake.initiation()
        return struct.pack(">HBH", self._version, MSG_INITIATION, len(payload)) + payload

    def finish(self, response: bytes) -> Session:
        """Consume the server's response frame (header included)."""
        if len(response) < HEADER_LEN:
            raise NoiseError("short handshake response")
        msg_type, length = struct.unpack(">BH", response[:HEADER_LEN])
        if msg_type == MSG_ERROR:
            raise NoiseError("server refused handshake: " + response[HEADER_LEN:].decode(errors="replace"))
        if msg_type != MSG_RESPONSE or length != RESPONSE_PAYLOAD_LEN or len(response) != HEADER_LEN + length:
            raise NoiseError("malformed handshake response")
        try:
            outcome = self._handshake.read_response(response[HEADER_LEN:])
        except noise_ik.HandshakeFailed as exc:
            raise NoiseError("handshake response did not decrypt") from exc
        return _session(self._version, outcome)


def parse_record_header(header: bytes) -> int:
    """Return the ciphertext length of a record frame, rejecting other frame types and oversized records."""
    msg_type, length = struct.unpack(">BH", header)
    if msg_type != MSG_RECORD:
        raise NoiseError(f"unexpected frame type {msg_type} after handshake")
    if length > MAX_CIPHERTEXT_SIZE:
        raise NoiseError(f"record of {length} bytes exceeds the {MAX_CIPHERTEXT_SIZE}-byte limit")
    if length < TAG_SIZE:
        raise NoiseError("record shorter than its authentication tag")
    return int(length)


class RecordDecoder:
    """The receive side of a Noise transport, without I/O: `feed` it bytes as they arrive, in any chunking,
    and it returns the plaintext of every record they complete, in order (zero-byte records included).

    It holds at most one incomplete record (under MAX_MESSAGE_SIZE bytes), and checks a record's header as
    soon as its three bytes are in, so a foreign or oversized frame is refused before its body is awaited.
    Any NoiseError ends the decoder: plaintexts completed earlier in the same `feed` are dropped with it (the
    session ends anyway), and every later `feed` raises the same error.
    """

    __slots__ = ("_buffer", "_cipher", "_error")

    def __init__(self, cipher: TransportCipher) -> None:
        self._cipher = cipher
        self._buffer = bytearray()
        self._error = ""

    @property
    def pending(self) -> int:
        """Bytes held of a record not yet complete."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        if self._error:
            raise NoiseError(self._error)
        buffer = self._buffer
        buffer += data
        plaintexts: list[bytes] = []
        start = 0
        try:
            while len(buffer) - start >= HEADER_LEN:
                end = start + HEADER_LEN + parse_record_header(bytes(buffer[start : start + HEADER_LEN]))
                if len(buffer) < end:
                    break
                plaintexts.append(self._cipher.open(bytes(buffer[start + HEADER_LEN : end])))
                start = end
        except NoiseError as exc:
            self._error = str(exc)
            buffer.clear()
            raise
        del buffer[:start]
        return plaintexts

    def end(self) -> None:
        """The byte stream ended: a NoiseError if it ended inside a record."""
        if self._error:
            raise NoiseError(self._error)
        if self._buffer:
            part = "record header" if len(self._buffer) < HEADER_LEN else "record"
            self._error = f"truncated {part} at the end of the stream"
            raise NoiseError(self._error)
