"""The text form and secret handling shared by preauth keys and API keys.

A key reads `<kind prefix><12 hex prefix>-<64 hex secret>` (`hskey-auth-…`, `hskey-api-…`), as Headscale
prints them. The 12-hex prefix is stored in clear to find the key and to name it in listings; the secret is
stored only as its SHA-256. Unlike a password, the secret is 256 random bits, so a fast hash is as safe as a
slow one and keeps authentication off the thread pool.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PREAUTH_KEY = "hskey-auth-"
API_KEY = "hskey-api-"
PREFIX_LEN = 12
SECRET_LEN = 64


def new_key_material(kind: str) -> tuple[str, str, bytes]:
    """A new key of `kind`: (full text to show once, prefix to store, hash of the secret to store)."""
    prefix = secrets.token_hex(PREFIX_LEN // 2)
    secret = secrets.token_hex(SECRET_LEN // 2)
    return f"{kind}{prefix}-{secret}", prefix, hash_secret(secret)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_key(text: str, kind: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key of `kind`, else None."""
    match = re.fullmatch(
        rf"{re.escape(kind)}([0-9a-f]{{{PREFIX_LEN}}})-([0-9a-f]{{{SECRET_LEN}}})", text.strip()
    )
    return (match.group(1), match.group(2)) if match else None


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def masked(kind: str, prefix: str) -> str:
    """How a key appears in logs and listings: never the secret."""
    return f"{kind}{prefix}-***"
