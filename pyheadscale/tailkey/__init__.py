"""Curve25519 key types of the Tailscale protocols, shared by the control server and the DERP relay.

One type per key role, as Tailscale's `types/key` has them, so that mypy refuses a machine key where a node
key belongs: `MachinePublic` (`mkey:`, the Noise static key a client talks to control with), `NodePublic`
(`nodekey:`, a node's WireGuard key, also its DERP address), `DiscoPublic` (`discokey:`, path discovery) and
`ChallengePublic` (`chalpub:`, the early-payload challenge). Their private halves are `MachinePrivate`,
`NodePrivate` and `ChallengePrivate`; machine and node private keys share the `privkey:` text form, as
Tailscale writes both to disk that way. `DerpMeshKey` is the relay mesh's pre-shared secret (64 bare hex
digits).

Inside the program a public key is its 32 raw bytes (the public types are `bytes` subclasses, so the DERP
data path keys dictionaries and frames with them at no cost); the text forms exist only at the boundaries:
wire JSON, database rows, config files, CLI and API output. Parsing follows Tailscale's rules: the exact
prefix, then exactly 64 hex digits (either case; we always write lowercase). Parse errors say what was wrong
and never repeat the input, which may be a private key or part of one.

This package depends on nothing in `pyheadscale` or `derp`, so the relay stays usable on its own.
"""

from __future__ import annotations

import base64
import hmac
import os
from typing import ClassVar, Generic, Self, TypeVar, final

import nacl.exceptions
import nacl.public
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

KEY_LEN = 32
"""Every key here is 32 bytes."""

NONCE_LEN = 24
"""A NaCl box's nonce, which leads each sealed message."""

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class InvalidKeyError(ValueError):
    """A key in text or raw form is malformed; the message names the problem, never the key."""


def _parse_hex(text: object, prefix: str, what: str) -> bytes:
    form = f"a string beginning with {prefix!r}" if prefix else "a string of hex digits"
    if not isinstance(text, str):
        raise InvalidKeyError(f"a {what} must be {form}, got {type(text).__name__}")
    if not text.startswith(prefix):
        raise InvalidKeyError(f"a {what} must begin with {prefix!r}")
    body = text[len(prefix) :]
    if len(body) != 2 * KEY_LEN:
        after = f" after {prefix!r}" if prefix else ""
        raise InvalidKeyError(f"a {what} must have {2 * KEY_LEN} hex digits{after}, got {len(body)}")
    if not _HEX_DIGITS.issuperset(body):
        raise InvalidKeyError(f"a {what} has a character that is not a hex digit")
    return bytes.fromhex(body)


def _check_raw(raw: object, what: str) -> bytes:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise InvalidKeyError(f"a {what} is {KEY_LEN} raw bytes, got {type(raw).__name__}")
    if len(raw) != KEY_LEN:
        raise InvalidKeyError(f"a {what} is {KEY_LEN} bytes, got {len(raw)}")
    return bytes(raw)


class _Public(bytes):
    """A public key: its 32 raw bytes, typed by role. Text form `PREFIX` + 64 lowercase hex digits."""

    __slots__ = ()
    PREFIX: ClassVar[str]
    WHAT: ClassVar[str]

    def __new__(cls, raw: bytes) -> Self:
        return super().__new__(cls, _check_raw(raw, cls.WHAT))

    @classmethod
    def from_text(cls, text: object) -> Self:
        """Parse the text form; raises InvalidKeyError naming what was wrong (but not the text)."""
        return super().__new__(cls, _parse_hex(text, cls.PREFIX, cls.WHAT))

    @classmethod
    def zero(cls) -> Self:
        """The all-zero key, which Tailscale clients send where they mean "no key"."""
        return cls(bytes(KEY_LEN))

    @property
    def text(self) -> str:
        return self.PREFIX + self.hex()

    def is_zero(self) -> bool:
        return not any(self)

    def short(self) -> str:
        """Tailscale's short form for logs and listings: the first five base64 digits in brackets."""
        return "" if self.is_zero() else f"[{base64.b64encode(self[:4]).decode()[:5]}]"

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.text!r})"


@final
class MachinePublic(_Public):
    """A machine's Noise static key: who is talking to the control server."""

    __slots__ = ()
    PREFIX = "mkey:"
    WHAT = "machine key"


@final
class NodePublic(_Public):
    """A node's WireGuard key: its identity to peers and its address on DERP."""

    __slots__ = ()
    PREFIX = "nodekey:"
    WHAT = "node key"


@final
class DiscoPublic(_Public):
    """A node's disco key, for the path-discovery messages peers exchange."""

    __slots__ = ()
    PREFIX = "discokey:"
    WHAT = "disco key"


@final
class ChallengePublic(_Public):
    """The public half of the challenge the control server sends in the TS2021 early payload."""

    __slots__ = ()
    PREFIX = "chalpub:"
    WHAT = "challenge key"


PublicT = TypeVar("PublicT", bound=_Public)


class _Private(Generic[PublicT]):
    """A Curve25519 private key of one role; never printed, compared in constant time."""

    __slots__ = ("_raw",)
    PREFIX: ClassVar[str]
    PUBLIC: ClassVar[type[_Public]]

    def __init__(self, raw: bytes) -> None:
        self._raw = _check_raw(raw, f"{self.PUBLIC.WHAT}'s private key")

    @classmethod
    def generate(cls) -> Self:
        raw = bytearray(os.urandom(KEY_LEN))
        raw[0] &= 248  # clamped at creation, as Tailscale does, so the stored key is a proper X25519 scalar
        raw[31] = (raw[31] & 127) | 64
        return cls(bytes(raw))

    @classmethod
    def from_text(cls, text: object) -> Self:
        return cls(_parse_hex(text, cls.PREFIX, f"{cls.PUBLIC.WHAT}'s private key"))

    def to_text(self) -> str:
        """The text form for key files; deliberately not `__str__`, so a key is never logged by accident."""
        return self.PREFIX + self._raw.hex()

    @property
    def raw(self) -> bytes:
        return self._raw

    def public(self) -> PublicT:
        private = X25519PrivateKey.from_private_bytes(self._raw)
        raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return self.PUBLIC(raw)  # type: ignore[return-value]  # PUBLIC is the class PublicT stands for

    def exchange(self, peer: PublicT) -> bytes:
        """X25519 Diffie-Hellman with a peer's public key of the same role."""
        private = X25519PrivateKey.from_private_bytes(self._raw)
        return private.exchange(X25519PublicKey.from_public_bytes(bytes(peer)))

    def seal_to(self, peer: PublicT, cleartext: bytes) -> bytes:
        """A NaCl box from us to `peer`: a random 24-byte nonce followed by the ciphertext."""
        box = nacl.public.Box(nacl.public.PrivateKey(self._raw), nacl.public.PublicKey(bytes(peer)))
        return bytes(box.encrypt(cleartext))

    def open_from(self, peer: PublicT, sealed: bytes) -> bytes | None:
        """Open a box `peer` sealed to us; None if it is too short or does not authenticate."""
        if len(sealed) < NONCE_LEN:
            return None
        try:
            box = nacl.public.Box(nacl.public.PrivateKey(self._raw), nacl.public.PublicKey(bytes(peer)))
            return bytes(box.decrypt(sealed))
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            return None

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Private)
            and type(other) is type(self)
            and hmac.compare_digest(self._raw, other._raw)
        )

    __hash__ = None  # type: ignore[assignment]  # equality is constant-time; no hashing of secrets

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<redacted>)"


@final
class MachinePrivate(_Private[MachinePublic]):
    """A machine key: the client's Noise static key, and the control server's own."""

    PREFIX = "privkey:"
    PUBLIC = MachinePublic


@final
class NodePrivate(_Private[NodePublic]):
    """A node key: a client's WireGuard key, and a DERP server's identity."""

    PREFIX = "privkey:"
    PUBLIC = NodePublic


@final
class ChallengePrivate(_Private[ChallengePublic]):
    """The per-connection challenge key of the TS2021 early payload."""

    PREFIX = "chalpriv:"
    PUBLIC = ChallengePublic


@final
class DerpMeshKey:
    """The pre-shared secret of a DERP mesh: 64 bare hex digits; compared in constant time, never printed."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        self._raw = _check_raw(raw, "mesh key")

    @classmethod
    def from_text(cls, text: object) -> DerpMeshKey:
        """Parse a mesh key as derper does: surrounding whitespace ignored (it comes from a file)."""
        return cls(_parse_hex(text.strip() if isinstance(text, str) else text, "", "mesh key"))

    def to_text(self) -> str:
        return self._raw.hex()

    @property
    def raw(self) -> bytes:
        return self._raw

    def matches(self, theirs: DerpMeshKey | None) -> bool:
        """Constant-time comparison; a missing or all-zero key never matches."""
        if theirs is None or not any(theirs._raw):
            return False
        return hmac.compare_digest(self._raw, theirs._raw)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DerpMeshKey) and hmac.compare_digest(self._raw, other._raw)

    __hash__ = None  # type: ignore[assignment]  # a secret: compared in constant time, never hashed

    def __repr__(self) -> str:
        return "DerpMeshKey(<redacted>)"


__all__ = [
    "KEY_LEN",
    "NONCE_LEN",
    "ChallengePrivate",
    "ChallengePublic",
    "DerpMeshKey",
    "DiscoPublic",
    "InvalidKeyError",
    "MachinePrivate",
    "MachinePublic",
    "NodePrivate",
    "NodePublic",
]
