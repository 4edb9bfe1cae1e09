"""Curve25519 node keys and mesh keys: text forms and the NaCl box used in the handshake.

Keys travel as raw 32-byte strings everywhere inside this package; the
``nodekey:``/``privkey:`` text forms exist for config files, logs and the
admission-control JSON.
"""

from __future__ import annotations

import hmac

import nacl.exceptions
import nacl.public

from derp.frames import KEY_LEN, NONCE_LEN

NODE_PUBLIC_PREFIX = "nodekey:"
NODE_PRIVATE_PREFIX = "privkey:"


class InvalidKeyError(ValueError):
    """A key in text or raw form is malformed."""


def coerce_private_key(key: nacl.public.PrivateKey | bytes) -> nacl.public.PrivateKey:
    """Accept either a PyNaCl private key or its 32 raw bytes."""
    if isinstance(key, nacl.public.PrivateKey):
        return key
    if len(key) != KEY_LEN:
        raise InvalidKeyError(f"private key must be {KEY_LEN} bytes, got {len(key)}")
    return nacl.public.PrivateKey(bytes(key))


def generate_private_key() -> nacl.public.PrivateKey:
    return nacl.public.PrivateKey.generate()


def public_key_bytes(private: nacl.public.PrivateKey) -> bytes:
    return bytes(private.public_key)


def seal_to(private: nacl.public.PrivateKey, peer_public: bytes, cleartext: bytes) -> bytes:
    """Box ``cleartext`` from us to the peer; the result is nonce followed by ciphertext."""
    box = nacl.public.Box(private, nacl.public.PublicKey(peer_public))
    return bytes(box.encrypt(cleartext))


def open_from(private: nacl.public.PrivateKey, peer_public: bytes, sealed: bytes) -> bytes | None:
    """Open a box made by :func:`seal_to` from the peer; None if it does not authenticate."""
    if len(sealed) < NONCE_LEN:
        return None
    try:
        box = nacl.public.Box(private, nacl.public.PublicKey(peer_public))
        return bytes(box.decrypt(sealed))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return None


def _parse_hex_key(text: str, prefix: str) -> bytes:
    text = text.strip()
    if not text.startswith(prefix):
        raise InvalidKeyError(f"key must start with {prefix!r}")
    try:
        raw = bytes.fromhex(text[len(prefix) :])
    except ValueError as exc:
        raise InvalidKeyError(f"key is not hexadecimal: {exc}") from exc
    if len(raw) != KEY_LEN:
        raise InvalidKeyError(f"key must be {KEY_LEN} bytes, got {len(raw)}")
    return raw


def format_node_public(key: bytes) -> str:
    return NODE_PUBLIC_PREFIX + key.hex()


def parse_node_public(text: str) -> bytes:
    return _parse_hex_key(text, NODE_PUBLIC_PREFIX)


def format_node_private(key: nacl.public.PrivateKey) -> str:
    return NODE_PRIVATE_PREFIX + bytes(key).hex()


def parse_node_private(text: str) -> nacl.public.PrivateKey:
    return nacl.public.PrivateKey(_parse_hex_key(text, NODE_PRIVATE_PREFIX))


def short_key(key: bytes) -> str:
    """A five-hex-digit key prefix for logs, in the bracketed style Tailscale logs use."""
    return f"[{key.hex()[:5]}]"


def parse_mesh_key(text: str) -> bytes:
    """Parse a mesh pre-shared key: 64 hex digits, surrounding whitespace ignored."""
    text = text.strip()
    if len(text) != 2 * KEY_LEN:
        raise InvalidKeyError("mesh key must be a 64-digit hexadecimal number")
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise InvalidKeyError(f"mesh key is not hexadecimal: {exc}") from exc


def mesh_keys_equal(ours: bytes | None, theirs: bytes | None) -> bool:
    """Constant-time comparison; a missing or all-zero key never matches."""
    if not ours or not theirs or not any(theirs):
        return False
    return hmac.compare_digest(ours, theirs)
