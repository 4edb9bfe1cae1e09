"""Preauth key text form and secret handling.

A key reads `hskey-auth-<12 hex prefix>-<64 hex secret>`, as Headscale prints them. The prefix is stored in clear to
find the key; the secret is stored only as its SHA-256. Unlike a password, the secret is 256 random bits, so a fast
hash is as safe as a slow one and keeps registration off the thread pool.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

KEY_PREFIX = "hskey-auth-"
PREFIX_LEN = 12
SECRET_LEN = 64

_KEY_RE = re.compile(rf"^{KEY_PREFIX}([0-9a-f]{{{PREFIX_LEN}}})-([0-9a-f]{{{SECRET_LEN}}})$")


def new_key_material() -> tuple[str, str, bytes]:
    """A new key: (full text to show once, prefix to store, hash of the secret to store)."""
    prefix = secrets.token_hex(PREFIX_LEN // 2)
    secret = secrets.token_hex(SECRET_LEN // 2)
    return f"{KEY_PREFIX}{prefix}-{secret}", prefix, hash_secret(secret)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_key(text: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None."""
    match = _KEY_RE.match(text.strip())
    return (match.group(1), match.group(2)) if match else None


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def masked(prefix: str) -> str:
    """How a key appears in logs and listings: never the secret."""
    return f"{KEY_PREFIX}{prefix}-***"
