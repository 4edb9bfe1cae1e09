"""Curve25519 key types and their text forms (`mkey:`, `nodekey:`, `discokey:`, `privkey:`, ...).

Tailscale writes every key as a type prefix and 64 lowercase hex digits. The prefix says what the key is for,
so a node key can never be mistaken for a machine key in a request, a database row or a log line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

MACHINE_PUBLIC_PREFIX = "mkey:"
MACHINE_PRIVATE_PREFIX = "privkey:"
NODE_PUBLIC_PREFIX = "nodekey:"
DISCO_PUBLIC_PREFIX = "discokey:"
CHALLENGE_PUBLIC_PREFIX = "chalpub:"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class InvalidKeyError(ValueError):
    """A key's text form is malformed; the message names the expected prefix."""


def parse_key(text: str, prefix: str) -> bytes:
    """Parse `prefix` + 64 hex digits into 32 raw bytes, or raise InvalidKeyError naming what was wrong."""
    if not isinstance(text, str):
        raise InvalidKeyError(f"key must be a string beginning with {prefix!r}")
    if not text.startswith(prefix):
        raise InvalidKeyError(f"key {text[:16]!r}... does not begin with {prefix!r}")
    body = text[len(prefix) :]
    if not _HEX64.fullmatch(body):  # fullmatch: `$` alone would accept a trailing newline
        raise InvalidKeyError(f"key with prefix {prefix!r} must be followed by 64 lowercase hex digits")
    return bytes.fromhex(body)


def format_key(raw: bytes, prefix: str) -> str:
    if len(raw) != 32:
        raise InvalidKeyError(f"a {prefix} key is 32 bytes, got {len(raw)}")
    return prefix + raw.hex()


def is_zero_key(text: str) -> bool:
    """Clients send an all-zero key where they mean 'no key' (e.g. an absent OldNodeKey)."""
    return not text or text.endswith("0" * 64)


@dataclass(frozen=True, slots=True)
class PrivateKey:
    """A Curve25519 private key: the server's Noise key, a DERP server key or a test client's keys."""

    raw: bytes

    @classmethod
    def generate(cls) -> PrivateKey:
        key = X25519PrivateKey.generate()
        return cls(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))

    @classmethod
    def from_text(cls, text: str) -> PrivateKey:
        return cls(parse_key(text.strip(), MACHINE_PRIVATE_PREFIX))

    def to_text(self) -> str:
        return format_key(self.raw, MACHINE_PRIVATE_PREFIX)

    def public(self) -> bytes:
        key = X25519PrivateKey.from_private_bytes(self.raw)
        return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def exchange(self, peer_public: bytes) -> bytes:
        """X25519 Diffie-Hellman with a peer's public key."""
        key = X25519PrivateKey.from_private_bytes(self.raw)
        return key.exchange(X25519PublicKey.from_public_bytes(peer_public))

    def __repr__(self) -> str:  # never print private material
        return "PrivateKey(<redacted>)"


def machine_public_text(raw: bytes) -> str:
    return format_key(raw, MACHINE_PUBLIC_PREFIX)


def node_public_text(raw: bytes) -> str:
    return format_key(raw, NODE_PUBLIC_PREFIX)


def short(text: str) -> str:
    """A key's short display form for logs, as Tailscale prints them: `[` five hex digits `]`."""
    _, _, body = text.partition(":")
    return f"[{body[:5]}]" if body else text[:8]
