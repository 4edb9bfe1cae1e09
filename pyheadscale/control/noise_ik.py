"""The handshake of TS2021: `Noise_IK_25519_ChaChaPoly_BLAKE2s`, without I/O.

The Noise specification (revision 34) defines it with a little state, the SymmetricState of its section
5.2 (a chaining key, a handshake hash, a cipher key and its nonce), HKDF (section 4.3, on HMAC) and the IK
pattern (section 7.5):

    <- s
    ...
    -> e, es, s, ss
    <- e, ee, se

The primitives are maintained libraries': X25519 and ChaCha20-Poly1305 from `cryptography`, BLAKE2s and HMAC
from the standard library. The message layouts are Tailscale's controlbase: the initiation carries no payload
(96 bytes: e, the encrypted s, the tag of the empty payload), the response neither (48 bytes: e and a tag).

The state is kept here, not in a general Noise library, because the handshake is a large part of what
accepting a control connection costs: the `noiseprotocol` library took about twice the CPU per handshake,
and parsed the server's static key again for every client. Here a `Responder` parses it once, and the hash and
chaining key after the protocol name, prologue and responder key (the same for every client of one protocol
version) are computed once per version.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

PROTOCOL_NAME = b"Noise_IK_25519_ChaChaPoly_BLAKE2s"
KEY_LEN = 32
TAG_LEN = 16
INITIATION_LEN = KEY_LEN + (KEY_LEN + TAG_LEN) + TAG_LEN
RESPONSE_LEN = KEY_LEN + TAG_LEN


class HandshakeFailed(Exception):
    """A handshake message did not authenticate, or a Diffie-Hellman result was all zeros (a low-order
    point): the peer does not hold the keys it claims, or the message was altered."""


def _hash(data: bytes) -> bytes:
    return hashlib.blake2s(data).digest()


def _hkdf(chaining_key: bytes, input_key_material: bytes) -> tuple[bytes, bytes]:
    """HKDF with two outputs, as Noise section 4.3 defines it on HMAC-BLAKE2s."""
    temp_key = hmac.digest(chaining_key, input_key_material, hashlib.blake2s)
    output1 = hmac.digest(temp_key, b"\x01", hashlib.blake2s)
    output2 = hmac.digest(temp_key, output1 + b"\x02", hashlib.blake2s)
    return output1, output2


def _nonce(n: int) -> bytes:
    """ChaChaPoly's handshake nonce: 32 zero bits, then the counter little-endian (Noise section 12.3)."""
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


def _dh(private: X25519PrivateKey, public: X25519PublicKey) -> bytes:
    try:
        return private.exchange(public)
    except ValueError as exc:  # cryptography refuses an all-zero shared secret
        raise HandshakeFailed("Diffie-Hellman with a low-order point") from exc


@functools.lru_cache(maxsize=64)
def _initial_state(prologue: bytes, responder_static: bytes) -> tuple[bytes, bytes]:
    """(h, ck) after InitializeSymmetric(protocol name), MixHash(prologue) and the pre-message MixHash(rs)."""
    h = _hash(PROTOCOL_NAME) if len(PROTOCOL_NAME) > 32 else PROTOCOL_NAME.ljust(32, b"\x00")
    ck = h
    h = _hash(_hash(h + prologue) + responder_static)
    return h, ck


class SymmetricState:
    """Noise's SymmetricState with its CipherState folded in (section 5.2)."""

    __slots__ = ("_ck", "_k", "_n", "h")

    def __init__(self, prologue: bytes, responder_static: bytes) -> None:
        self.h, self._ck = _initial_state(prologue, responder_static)
        self._k = b""
        self._n = 0

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_key(self, input_key_material: bytes) -> None:
        self._ck, self._k = _hkdf(self._ck, input_key_material)
        self._n = 0

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        # Always keyed here: in IK every EncryptAndHash follows a MixKey.
        ciphertext = ChaCha20Poly1305(self._k).encrypt(_nonce(self._n), plaintext, self.h)
        self._n += 1
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        try:
            plaintext = ChaCha20Poly1305(self._k).decrypt(_nonce(self._n), ciphertext, self.h)
        except InvalidTag as exc:
            raise HandshakeFailed("handshake message failed authentication") from exc
        self._n += 1
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        """(initiator-to-responder key, responder-to-initiator key)."""
        return _hkdf(self._ck, b"")


class Outcome(NamedTuple):
    """What a completed handshake established."""

    remote_static: bytes
    send_key: bytes
    receive_key: bytes
    handshake_hash: bytes


class Responder:
    """The server side, for every handshake with one static key."""

    __slots__ = ("_static", "public")

    def __init__(self, static_private: bytes) -> None:
        self._static = X25519PrivateKey.from_private_bytes(static_private)
        self.public = self._static.public_key().public_bytes_raw()

    def respond(self, prologue: bytes, initiation: bytes) -> tuple[bytes, Outcome]:
        """Read the initiator's `-> e, es, s, ss` message, write `<- e, ee, se`: (response, outcome)."""
        if len(initiation) != INITIATION_LEN:
            raise HandshakeFailed(f"an initiation is {INITIATION_LEN} bytes, got {len(initiation)}")
        state = SymmetricState(prologue, self.public)
        remote_ephemeral = initiation[:KEY_LEN]
        state.mix_hash(remote_ephemeral)
        re = X25519PublicKey.from_public_bytes(remote_ephemeral)
        state.mix_key(_dh(self._static, re))
        remote_static = state.decrypt_and_hash(initiation[KEY_LEN : 2 * KEY_LEN + TAG_LEN])
        rs = X25519PublicKey.from_public_bytes(remote_static)
        state.mix_key(_dh(self._static, rs))
        state.decrypt_and_hash(initiation[2 * KEY_LEN + TAG_LEN :])  # the empty payload's tag
        ephemeral = X25519PrivateKey.generate()
        ephemeral_public = ephemeral.public_key().public_bytes_raw()
        state.mix_hash(ephemeral_public)
        state.mix_key(_dh(ephemeral, re))
        state.mix_key(_dh(ephemeral, rs))
        response = ephemeral_public + state.encrypt_and_hash(b"")
        to_responder, to_initiator = state.split()
        return response, Outcome(remote_static, to_initiator, to_responder, state.h)


class Initiator:
    """The client side: one initiation, then the response it answers."""

    __slots__ = ("_ephemeral", "_responder_static", "_rs", "_state", "_static")

    def __init__(self, static_private: bytes, responder_static: bytes, prologue: bytes) -> None:
        self._static = X25519PrivateKey.from_private_bytes(static_private)
        self._responder_static = bytes(responder_static)
        self._rs = X25519PublicKey.from_public_bytes(self._responder_static)
        self._state = SymmetricState(prologue, self._responder_static)
        self._ephemeral: X25519PrivateKey | None = None

    def initiation(self) -> bytes:
        """Write `-> e, es, s, ss` (once)."""
        if self._ephemeral is not None:
            raise RuntimeError("the initiation of a handshake is written once")
        state = self._state
        self._ephemeral = X25519PrivateKey.generate()
        ephemeral_public = self._ephemeral.public_key().public_bytes_raw()
        state.mix_hash(ephemeral_public)
        state.mix_key(_dh(self._ephemeral, self._rs))
        encrypted_static = state.encrypt_and_hash(self._static.public_key().public_bytes_raw())
        state.mix_key(_dh(self._static, self._rs))
        return ephemeral_public + encrypted_static + state.encrypt_and_hash(b"")

    def read_response(self, response: bytes) -> Outcome:
        """Read `<- e, ee, se` and finish."""
        if self._ephemeral is None:
            raise RuntimeError("a response is read after the initiation is written")
        if len(response) != RESPONSE_LEN:
            raise HandshakeFailed(f"a response is {RESPONSE_LEN} bytes, got {len(response)}")
        state = self._state
        remote_ephemeral = response[:KEY_LEN]
        state.mix_hash(remote_ephemeral)
        re = X25519PublicKey.from_public_bytes(remote_ephemeral)
        state.mix_key(_dh(self._ephemeral, re))
        state.mix_key(_dh(self._static, re))
        state.decrypt_and_hash(response[KEY_LEN:])
        to_responder, to_initiator = state.split()
        return Outcome(self._responder_static, to_responder, to_initiator, state.h)
