"""The TS2021 Noise layer: the IK handshake against the cacophony test vector and an independent
implementation, and the transport records (big-endian nonces, splitting at 4077 bytes, failures that end
the session)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import struct
from collections.abc import Callable
from typing import NotRequired, TypedDict

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from noise.connection import Keypair, NoiseConnection

from pyheadscale.control import noise
from pyheadscale.control.noise_stream import NoiseStream
from pyheadscale.tailkey import MachinePrivate

# Fixed ephemeral keys are the point of the vector and cross-check tests; noiseprotocol warns about them.
pytestmark = pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set:UserWarning")


class CacophonyVector(TypedDict):
    """One cacophony test vector: hex strings, and (payload, ciphertext) hex pairs per handshake message."""

    init_prologue: str
    resp_prologue: NotRequired[str]  # absent from the vector below: the responder uses init_prologue
    init_static: str
    init_ephemeral: str
    init_remote_static: str
    resp_static: str
    resp_ephemeral: str
    handshake_hash: str
    messages: list[tuple[str, str]]


# Noise_IK_25519_ChaChaPoly_BLAKE2s from the cacophony test vectors (vectors/cacophony.txt in
# haskell-cryptography/cacophony), copied verbatim.
VECTOR: CacophonyVector = {
    "init_prologue": "4a6f686e2047616c74",
    "init_static": "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1",
    "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
    "init_remote_static": "31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62",
    "resp_static": "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893",
    "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
    "handshake_hash": "48f3cb8bc9319da4ba1e9933991b1c4ed4034f1f126a76d3a1fbcfd7f94248d4",
    "messages": [
        (
            "4c756477696720766f6e204d69736573",
            "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c79440b03ddc7aac5123d06a1b23b71670e32e76c2823"
            "9a7ca4ac8f784de7e44c1adbfc6e83fef7352a58d9d56157400c0a737b1d171ce368229c7b752ac25b8faf4eca690f6d896f543be0"
            "2c996ab2b86b76",
        ),
        (
            "4d757272617920526f746862617264",
            "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843d9b5a8927f0ac9655ef76833bc7e5561f42e691ac8"
            "404efd6fbd6308b6a27c",
        ),
        ("462e20412e20486179656b", "2c256ed08fcd08c2980f954ee4beaccb61c9581340f5dd2fd1cf3b"),
        ("4361726c204d656e676572", "d6033f70eee20945c7c9dba304e397ee3b284ff5e00fd9efb095d3"),
        (
            "4a65616e2d426170746973746520536179",
            "a9c068ca5d8babf72560652d8e851adbfac35c8a66e810d560863173e96adf4cfe",
        ),
        (
            "457567656e2042f6686d20766f6e2042617765726b",
            "2a09d8f459e5927e40fdd2eddc99bdafb04e13a26f145cb5cfe9e6ba34c94331ebc17d5156",
        ),
    ],
}


# ---- an independent Noise IK (spec sections 5 and 7), written from the specification for cross-checking ----


def _pub(priv: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _dh(priv: bytes, pub: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(priv).exchange(X25519PublicKey.from_public_bytes(pub))


def _hkdf(ck: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    temp = hmac.new(ck, ikm, hashlib.blake2s).digest()
    out1 = hmac.new(temp, b"\x01", hashlib.blake2s).digest()
    out2 = hmac.new(temp, out1 + b"\x02", hashlib.blake2s).digest()
    return out1, out2


def le_nonce(n: int) -> bytes:
    return b"\x00" * 4 + n.to_bytes(8, "little")


def be_nonce(n: int) -> bytes:
    return b"\x00" * 4 + n.to_bytes(8, "big")


class RefIK:
    """One side of Noise_IK_25519_ChaChaPoly_BLAKE2s with a fixed ephemeral key."""

    def __init__(
        self,
        *,
        initiator: bool,
        static: bytes,
        ephemeral: bytes,
        prologue: bytes,
        remote_static: bytes | None = None,
    ) -> None:
        name = b"Noise_IK_25519_ChaChaPoly_BLAKE2s"
        self.h = hashlib.blake2s(name).digest() if len(name) > 32 else name.ljust(32, b"\x00")
        self.ck = self.h
        self.k: bytes | None = None
        self.n = 0
        self.initiator = initiator
        self.s, self.e = static, ephemeral
        self.rs = remote_static
        self.re: bytes | None = None
        self._mix_hash(prologue)
        responder_static = remote_static if initiator else _pub(static)
        assert responder_static is not None
        self._mix_hash(responder_static)

    def _mix_hash(self, data: bytes) -> None:
        self.h = hashlib.blake2s(self.h + data).digest()

    def _mix_key(self, ikm: bytes) -> None:
        self.ck, self.k = _hkdf(self.ck, ikm)
        self.n = 0

    def _encrypt_and_hash(self, plaintext: bytes) -> bytes:
        if self.k is None:
            out = plaintext
        else:
            out = ChaCha20Poly1305(self.k).encrypt(le_nonce(self.n), plaintext, self.h)
            self.n += 1
        self._mix_hash(out)
        return out

    def _decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        assert self.k is not None
        out = ChaCha20Poly1305(self.k).decrypt(le_nonce(self.n), ciphertext, self.h)
        self.n += 1
        self._mix_hash(ciphertext)
        return out

    def write1(self, payload: bytes) -> bytes:  # -> e, es, s, ss
        assert self.rs is not None
        e_pub = _pub(self.e)
        self._mix_hash(e_pub)
        self._mix_key(_dh(self.e, self.rs))
        enc_s = self._encrypt_and_hash(_pub(self.s))
        self._mix_key(_dh(self.s, self.rs))
        return e_pub + enc_s + self._encrypt_and_hash(payload)

    def read1(self, message: bytes) -> bytes:
        self.re = message[:32]
        self._mix_hash(self.re)
        self._mix_key(_dh(self.s, self.re))
        self.rs = self._decrypt_and_hash(message[32:80])
        self._mix_key(_dh(self.s, self.rs))
        return self._decrypt_and_hash(message[80:])

    def write2(self, payload: bytes) -> bytes:  # <- e, ee, se
        assert self.re is not None and self.rs is not None
        e_pub = _pub(self.e)
        self._mix_hash(e_pub)
        self._mix_key(_dh(self.e, self.re))
        self._mix_key(_dh(self.e, self.rs))
        return e_pub + self._encrypt_and_hash(payload)

    def read2(self, message: bytes) -> bytes:
        self.re = message[:32]
        self._mix_hash(self.re)
        self._mix_key(_dh(self.e, self.re))
        self._mix_key(_dh(self.s, self.re))
        return self._decrypt_and_hash(message[32:])

    def split(self) -> tuple[bytes, bytes]:
        """(initiator-to-responder key, responder-to-initiator key)."""
        return _hkdf(self.ck, b"")


def _vector_sides() -> tuple[RefIK, RefIK]:
    v = VECTOR
    init = RefIK(
        initiator=True,
        static=bytes.fromhex(v["init_static"]),
        ephemeral=bytes.fromhex(v["init_ephemeral"]),
        prologue=bytes.fromhex(v["init_prologue"]),
        remote_static=bytes.fromhex(v["init_remote_static"]),
    )
    resp = RefIK(
        initiator=False,
        static=bytes.fromhex(v["resp_static"]),
        ephemeral=bytes.fromhex(v["resp_ephemeral"]),
        prologue=bytes.fromhex(v["init_prologue"]),
    )
    return init, resp


def test_reference_implementation_matches_cacophony_vector() -> None:
    init, resp = _vector_sides()
    msgs = [(bytes.fromhex(p), bytes.fromhex(c)) for p, c in VECTOR["messages"]]
    assert init.write1(msgs[0][0]) == msgs[0][1]
    assert resp.read1(msgs[0][1]) == msgs[0][0]
    assert resp.write2(msgs[1][0]) == msgs[1][1]
    assert init.read2(msgs[1][1]) == msgs[1][0]
    assert init.h == resp.h == bytes.fromhex(VECTOR["handshake_hash"])
    assert init.split() == resp.split()


def test_noiseprotocol_as_configured_matches_vector() -> None:
    """The library and protocol name our handshake uses reproduce the vector with the vector's keys."""
    v = VECTOR
    conn = NoiseConnection.from_name(noise.PROTOCOL_NAME)
    conn.set_as_responder()
    conn.set_prologue(bytes.fromhex(v["resp_prologue"] if "resp_prologue" in v else v["init_prologue"]))
    conn.set_keypair_from_private_bytes(Keypair.STATIC, bytes.fromhex(v["resp_static"]))
    conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, bytes.fromhex(v["resp_ephemeral"]))
    conn.start_handshake()
    msgs = [(bytes.fromhex(p), bytes.fromhex(c)) for p, c in v["messages"]]
    assert conn.read_message(msgs[0][1]) == msgs[0][0]
    assert conn.write_message(msgs[1][0]) == msgs[1][1]
    assert bytes(conn.noise_protocol.handshake_hash) == bytes.fromhex(v["handshake_hash"])


def test_transport_cipher_against_vector_transport_messages() -> None:
    """Transport messages 3 and 4 use nonce 0, where big- and little-endian agree, so our cipher must
    reproduce them. Message 5 is the initiator's nonce 1: Tailscale's big-endian nonce must differ from the
    vector's little-endian one."""
    init, resp = _vector_sides()
    msgs = [(bytes.fromhex(p), bytes.fromhex(c)) for p, c in VECTOR["messages"]]
    init.write1(msgs[0][0]), resp.read1(msgs[0][1]), resp.write2(msgs[1][0]), init.read2(msgs[1][1])
    k1, k2 = init.split()
    i2r, r2i = noise.TransportCipher(k1), noise.TransportCipher(k2)
    assert i2r.seal_records(msgs[2][0]) == struct.pack(">BH", 4, len(msgs[2][1])) + msgs[2][1]
    assert r2i.seal_records(msgs[3][0]) == struct.pack(">BH", 4, len(msgs[3][1])) + msgs[3][1]
    second = i2r.seal_records(msgs[4][0])[3:]
    assert second != msgs[4][1]  # standard Noise (little-endian) differs at nonce 1
    assert second == ChaCha20Poly1305(k1).encrypt(be_nonce(1), msgs[4][0], None)
    # and the receiving side opens the vector's nonce-0 messages
    assert noise.TransportCipher(k1).open(msgs[2][1]) == msgs[2][0]


def _initiation_frame(ref: RefIK, version: int) -> bytes:
    payload = ref.write1(b"")
    return struct.pack(">HBH", version, noise.MSG_INITIATION, len(payload)) + payload


def test_our_responder_against_reference_initiator() -> None:
    server = MachinePrivate.generate()
    machine = MachinePrivate.generate()
    ref = RefIK(
        initiator=True,
        static=machine.raw,
        ephemeral=bytes(range(1, 33)),
        prologue=noise.prologue(130),
        remote_static=server.public(),
    )
    frame, session = noise.respond(server, _initiation_frame(ref, 130))
    assert frame[:3] == struct.pack(">BH", noise.MSG_RESPONSE, 48) and len(frame) == 51
    assert ref.read2(frame[3:]) == b""
    assert session.handshake_hash == ref.h
    assert session.version == 130
    assert session.peer_static == machine.public()
    k1, k2 = ref.split()
    # client -> server records, big-endian nonces 0 and 1
    for n, text in enumerate([b"first", b"second"]):
        assert session.recv.open(ChaCha20Poly1305(k1).encrypt(be_nonce(n), text, None)) == text
    # server -> client
    for n, text in enumerate([b"alpha", b"beta"]):
        record = session.send.seal_records(text)
        assert record[:3] == struct.pack(">BH", 4, len(text) + 16)
        assert ChaCha20Poly1305(k2).decrypt(be_nonce(n), record[3:], None) == text


def test_our_initiator_against_reference_responder() -> None:
    server = MachinePrivate.generate()
    machine = MachinePrivate.generate()
    initiator = noise.Initiator(machine, server.public(), 131)
    init = initiator.initiation()
    assert init[:5] == struct.pack(">HBH", 131, 1, 96) and len(init) == noise.INITIATION_LEN
    ref = RefIK(
        initiator=False, static=server.raw, ephemeral=bytes(range(2, 34)), prologue=noise.prologue(131)
    )
    assert ref.read1(init[5:]) == b""
    assert ref.rs == machine.public()
    reply = ref.write2(b"")
    session = initiator.finish(struct.pack(">BH", 2, len(reply)) + reply)
    assert session.handshake_hash == ref.h
    k1, _ = ref.split()
    assert ChaCha20Poly1305(k1).decrypt(be_nonce(0), session.send.seal_records(b"x")[3:], None) == b"x"


def test_our_responder_against_noiseprotocol_initiator_with_fixed_ephemeral() -> None:
    server = MachinePrivate.generate()
    machine = MachinePrivate.generate()
    conn = NoiseConnection.from_name(noise.PROTOCOL_NAME)
    conn.set_as_initiator()
    conn.set_prologue(noise.prologue(1))
    conn.set_keypair_from_private_bytes(Keypair.STATIC, machine.raw)
    conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, bytes(range(3, 35)))
    conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, server.public())
    conn.start_handshake()
    payload = conn.write_message(b"")
    frame, session = noise.respond(server, struct.pack(">HBH", 1, 1, len(payload)) + payload)
    conn.read_message(frame[3:])
    assert bytes(conn.noise_protocol.handshake_hash) == session.handshake_hash


def test_our_initiator_against_noiseprotocol_responder() -> None:
    """The handshake before noise_ik.py was the `noiseprotocol` library's: ours interoperates with it both
    ways, down to the handshake hash and the transport keys (a record sealed by one opens with the other)."""
    server = MachinePrivate.generate()
    machine = MachinePrivate.generate()
    initiator = noise.Initiator(machine, server.public(), 130)
    init = initiator.initiation()
    conn = NoiseConnection.from_name(noise.PROTOCOL_NAME)
    conn.set_as_responder()
    conn.set_prologue(noise.prologue(130))
    conn.set_keypair_from_private_bytes(Keypair.STATIC, server.raw)
    conn.start_handshake()
    assert conn.read_message(init[noise.INITIATION_HEADER_LEN :]) == b""
    assert conn.noise_protocol.handshake_state.rs.public_bytes == machine.public()
    reply = conn.write_message(b"")
    session = initiator.finish(struct.pack(">BH", noise.MSG_RESPONSE, len(reply)) + reply)
    proto = conn.noise_protocol
    assert session.handshake_hash == bytes(proto.handshake_hash)
    to_server = noise.TransportCipher(proto.cipher_state_decrypt.k)
    assert to_server.open(session.send.seal_records(b"hello")[3:]) == b"hello"
    to_client = noise.TransportCipher(proto.cipher_state_encrypt.k)
    assert session.recv.open(to_client.seal_records(b"welcome")[3:]) == b"welcome"


def test_our_responder_against_noiseprotocol_initiator_keys() -> None:
    server = MachinePrivate.generate()
    conn = NoiseConnection.from_name(noise.PROTOCOL_NAME)
    conn.set_as_initiator()
    conn.set_prologue(noise.prologue(131))
    conn.set_keypair_from_private_bytes(Keypair.STATIC, MachinePrivate.generate().raw)
    conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, server.public())
    conn.start_handshake()
    payload = conn.write_message(b"")
    responder = noise.Responder(server)
    frame, session = responder.respond(struct.pack(">HBH", 131, 1, len(payload)) + payload)
    assert conn.read_message(frame[3:]) == b""
    proto = conn.noise_protocol
    assert session.handshake_hash == bytes(proto.handshake_hash)
    assert (
        session.recv.open(noise.TransportCipher(proto.cipher_state_encrypt.k).seal_records(b"a")[3:]) == b"a"
    )
    assert (
        noise.TransportCipher(proto.cipher_state_decrypt.k).open(session.send.seal_records(b"b")[3:]) == b"b"
    )


def test_one_responder_serves_many_handshakes_with_distinct_keys() -> None:
    """The responder keeps the server key and the per-version initial state across handshakes; each
    handshake still gets its own ephemeral key, so no two sessions share transport keys."""
    server = MachinePrivate.generate()
    responder = noise.Responder(server)
    sessions = []
    for version in (130, 130, 131):
        initiator = noise.Initiator(MachinePrivate.generate(), server.public(), version)
        frame, server_session = responder.respond(initiator.initiation())
        client_session = initiator.finish(frame)
        assert client_session.handshake_hash == server_session.handshake_hash
        assert server_session.recv.open(client_session.send.seal_records(b"x")[3:]) == b"x"
        sessions.append(server_session)
    assert len({s.handshake_hash for s in sessions}) == 3
    assert len({frame[3:35] for frame in (responder.respond(_fresh_init(server))[0] for _ in range(3))}) == 3


def _fresh_init(server: MachinePrivate) -> bytes:
    return noise.Initiator(MachinePrivate.generate(), server.public(), 130).initiation()


def test_initiator_is_single_use() -> None:
    initiator = noise.Initiator(MachinePrivate.generate(), MachinePrivate.generate().public(), 130)
    with pytest.raises(RuntimeError, match="after the initiation"):
        initiator.finish(struct.pack(">BH", noise.MSG_RESPONSE, 48) + bytes(48))
    initiator.initiation()
    with pytest.raises(RuntimeError, match="written once"):
        initiator.initiation()


def test_prologue_binds_version() -> None:
    """An initiation claiming a different version than its prologue was built with does not decrypt."""
    server = MachinePrivate.generate()
    ref = RefIK(
        initiator=True,
        static=MachinePrivate.generate().raw,
        ephemeral=bytes(range(1, 33)),
        prologue=noise.prologue(130),
        remote_static=server.public(),
    )
    frame = _initiation_frame(ref, 130)
    with pytest.raises(noise.NoiseError):
        noise.respond(server, struct.pack(">H", 129) + frame[2:])


def test_wrong_server_key_refused() -> None:
    server, other = MachinePrivate.generate(), MachinePrivate.generate()
    init = noise.Initiator(MachinePrivate.generate(), other.public(), 130).initiation()
    with pytest.raises(noise.NoiseError, match="wrong server key"):
        noise.respond(server, init)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:-1], "size"),
        (lambda b: b + b"\x00", "size"),
        (lambda b: b[:2] + b"\x02" + b[3:], "type"),
        (lambda b: b[:3] + b"\x00\x61" + b[5:], "length"),
    ],
)
def test_initiation_header_errors(mutate: Callable[[bytes], bytes], message: str) -> None:
    init = noise.Initiator(MachinePrivate.generate(), MachinePrivate.generate().public(), 130).initiation()
    with pytest.raises(noise.NoiseError, match=message):
        noise.parse_initiation(mutate(init))


def test_initiator_rejects_error_and_malformed_responses() -> None:
    initiator = noise.Initiator(MachinePrivate.generate(), MachinePrivate.generate().public(), 130)
    initiator.initiation()
    with pytest.raises(noise.NoiseError, match="refused handshake: go away"):
        initiator.finish(struct.pack(">BH", noise.MSG_ERROR, 7) + b"go away")
    with pytest.raises(noise.NoiseError, match="short"):
        initiator.finish(b"\x02")
    with pytest.raises(noise.NoiseError, match="malformed"):
        initiator.finish(struct.pack(">BH", 2, 47) + b"\x00" * 47)


# ---- transport records ----


def _pair() -> tuple[noise.Session, noise.Session]:
    server = MachinePrivate.generate()
    initiator = noise.Initiator(MachinePrivate.generate(), server.public(), 130)
    frame, server_session = noise.respond(server, initiator.initiation())
    return initiator.finish(frame), server_session


def _split_records(data: bytes) -> list[bytes]:
    out = []
    while data:
        kind, length = struct.unpack(">BH", data[:3])
        assert kind == noise.MSG_RECORD
        out.append(data[3 : 3 + length])
        data = data[3 + length :]
    return out


def test_max_plaintext_is_4077() -> None:
    assert noise.MAX_PLAINTEXT_SIZE == 4077 and noise.MAX_CIPHERTEXT_SIZE == 4093


@pytest.mark.parametrize(
    "size, lengths",
    [
        (0, [16]),
        (1, [17]),
        (4077, [4093]),
        (4078, [4093, 17]),
        (4077 * 2 + 10, [4093, 4093, 26]),
    ],
)
def test_multi_record_split(size: int, lengths: list[int]) -> None:
    client, server = _pair()
    plaintext = bytes(i % 251 for i in range(size))
    records = _split_records(client.send.seal_records(plaintext))
    assert [len(r) for r in records] == lengths
    assert b"".join(server.recv.open(r) for r in records) == plaintext


def test_big_endian_nonce_independent_check() -> None:
    """Decrypt the first two records with cryptography's AEAD and explicit big-endian nonces."""
    server = MachinePrivate.generate()
    ref = RefIK(
        initiator=True,
        static=MachinePrivate.generate().raw,
        ephemeral=bytes(range(5, 37)),
        prologue=noise.prologue(130),
        remote_static=server.public(),
    )
    frame, session = noise.respond(server, _initiation_frame(ref, 130))
    ref.read2(frame[3:])
    _, k2 = ref.split()
    records = _split_records(session.send.seal_records(b"A" * 4077 + b"B" * 5))
    aead = ChaCha20Poly1305(k2)
    assert aead.decrypt(be_nonce(0), records[0], None) == b"A" * 4077
    assert aead.decrypt(be_nonce(1), records[1], None) == b"B" * 5
    with pytest.raises(InvalidTag):
        aead.decrypt(le_nonce(1), records[1], None)


@pytest.mark.parametrize(
    "header, message",
    [
        (struct.pack(">BH", noise.MSG_RESPONSE, 32), "unexpected frame type 2"),
        (struct.pack(">BH", noise.MSG_ERROR, 32), "unexpected frame type 3"),
        (struct.pack(">BH", 0, 32), "unexpected frame type 0"),
        (struct.pack(">BH", noise.MSG_RECORD, 0xFFFF), "exceeds"),
        (struct.pack(">BH", noise.MSG_RECORD, 4094), "exceeds"),
        (struct.pack(">BH", noise.MSG_RECORD, 15), "shorter"),
    ],
)
def test_record_header_errors(header: bytes, message: str) -> None:
    with pytest.raises(noise.NoiseError, match=message):
        noise.parse_record_header(header)


def test_record_header_accepts_limits() -> None:
    assert noise.parse_record_header(struct.pack(">BH", 4, 4093)) == 4093
    assert noise.parse_record_header(struct.pack(">BH", 4, 16)) == 16


def test_tampered_record_poisons_cipher() -> None:
    client, server = _pair()
    good = _split_records(client.send.seal_records(b"hello"))[0]
    bad = bytearray(good)
    bad[0] ^= 1
    with pytest.raises(noise.NoiseError, match="authentication"):
        server.recv.open(bytes(bad))
    # the counter is out of step now: even the genuine record is refused
    with pytest.raises(noise.NoiseError):
        server.recv.open(good)


def test_replayed_and_reordered_records_refused() -> None:
    client, server = _pair()
    first = _split_records(client.send.seal_records(b"one"))[0]
    second = _split_records(client.send.seal_records(b"two"))[0]
    assert server.recv.open(first) == b"one"
    with pytest.raises(noise.NoiseError):
        server.recv.open(first)  # replay
    client2, server2 = _pair()
    a = _split_records(client2.send.seal_records(b"a"))[0]
    b = _split_records(client2.send.seal_records(b"b"))[0]
    with pytest.raises(noise.NoiseError):
        server2.recv.open(b)  # reordered
    assert second and a


async def _no_bytes() -> bytes:
    return b""


def _stream(session: noise.Session, data: bytes, chunk: int = 1 << 16) -> NoiseStream:
    """A stream that reads `data` in pieces of `chunk` bytes, then its end."""
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]

    async def read_some() -> bytes:
        return pieces.pop(0) if pieces else b""

    async def write(_data: bytes) -> None:
        pass

    return NoiseStream(session, read_some, write)


async def test_stream_reads_records_and_clean_eof() -> None:
    client, server = _pair()
    stream = _stream(server, client.send.seal_records(b"x" * 5000))
    assert await stream.read() == b"x" * 4077
    assert await stream.read() == b"x" * 923
    assert await stream.read() == b""


@pytest.mark.parametrize("cut", [1, 2, 3, 10, 20])
async def test_stream_truncated(cut: int) -> None:
    client, server = _pair()
    data = client.send.seal_records(b"payload-bytes")
    stream = _stream(server, data[:cut])
    with pytest.raises(noise.NoiseError, match="truncated"):
        await stream.read()


async def test_stream_invalid_frames() -> None:
    client, server = _pair()
    with pytest.raises(noise.NoiseError, match="type"):
        await _stream(server, struct.pack(">BH", 2, 48) + b"\x00" * 48).read()
    with pytest.raises(noise.NoiseError, match="exceeds"):
        await _stream(server, struct.pack(">BH", 4, 0xFFFF) + b"\x00" * 10).read()
    record = client.send.seal_records(b"abc")
    with pytest.raises(noise.NoiseError, match="authentication"):
        await _stream(server, record[:-1] + bytes([record[-1] ^ 0x80])).read()


async def test_stream_write_seals_in_order() -> None:
    client, server = _pair()
    written: list[bytes] = []

    async def write(data: bytes) -> None:
        written.append(data)

    stream = NoiseStream(server, _no_bytes, write)
    await stream.write(b"")
    assert written == []
    await asyncio.gather(*(stream.write(bytes([i]) * 10) for i in range(5)))
    opened = [client.recv.open(r) for chunk in written for r in _split_records(chunk)]
    assert opened == [bytes([i]) * 10 for i in range(5)]


async def test_stream_skips_zero_byte_records() -> None:
    """Zero-byte records are allowed in TS2021 (controlbase loops past them); not an end of stream."""
    client, server = _pair()
    data = client.send.seal_records(b"") + client.send.seal_records(b"") + client.send.seal_records(b"after")
    stream = _stream(server, data)
    assert await stream.read() == b"after"
    assert await stream.read() == b""


@pytest.mark.parametrize(
    "point",
    [
        bytes(32),
        b"\x01" + bytes(31),
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    ],
)
def test_low_order_ephemeral_refused(point: bytes) -> None:
    """A low-order ephemeral key makes every DH output zero; the handshake must fail, not proceed."""
    server = MachinePrivate.generate()
    init = noise.Initiator(MachinePrivate.generate(), server.public(), 130).initiation()
    forged = init[:5] + point + init[5 + 32 :]
    with pytest.raises(noise.NoiseError):
        noise.respond(server, forged)
