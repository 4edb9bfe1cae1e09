"""The text form and secret handling shared by preauth keys and API keys.

A key reads `<kind prefix><12-char prefix>-<64-char secret>` (`hskey-auth-…`, `hskey-api-…`), as Headscale
prints them; both parts are in the URL-safe base64 alphabet (ours happen to be hex). The prefix is stored in
clear to find the key and to name it in listings; the secret is stored only as a hash. Keys we make are hashed
with SHA-256: the secret is 256 random bits, so a fast hash is as safe as a slow one and keeps authentication
off the thread pool.

Keys taken over from a Headscale database (pyheadscale.db.headscale_import) keep Headscale's bcrypt hashes and
its older text forms, so they go on working:
- bcrypt-hashed secrets (every Headscale API key, preauth keys since v0.28) are checked with the `bcrypt`
  library on a worker thread, at most two at a time, and a secret that passed is remembered (as its SHA-256)
  so later uses are as cheap as our own keys;
- API keys of the form `<7-char prefix>.<32-char secret>` (Headscale before v0.27.1), bcrypt-hashed;
- preauth keys kept in clear by Headscale before v0.28 (any text without `hskey-auth-`): the import stores
  `LEGACY_MARK + the first 12 characters` as the prefix and the SHA-256 of the whole text as the hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets

import bcrypt

PREAUTH_KEY = "hskey-auth-"
API_KEY = "hskey-api-"
PREFIX_LEN = 12
SECRET_LEN = 64
MAX_LEGACY_LEN = 256
LEGACY_MARK = "legacy:"
"""Marks the stored prefix of a pre-v0.28 Headscale preauth key (kept in clear there, hashed here)."""

_URL_SAFE = "[A-Za-z0-9_-]"
_LEGACY_API_KEY = re.compile(rf"({_URL_SAFE}{{7}})\.({_URL_SAFE}{{32}})")
_BCRYPT_MARK = b"$2"
BCRYPT_AT_ONCE = 2
"""bcrypt checks running at once, whoever asks: a flood of wrong secrets costs two worker threads, no more,
and the rest wait on the event loop rather than holding the threads file I/O needs."""
_bcrypt_slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
_bcrypt_passed: dict[bytes, bytes] = {}
"""bcrypt hash -> SHA-256 of the secret that matched it: each imported key pays for bcrypt once."""


def new_key_material(kind: str) -> tuple[str, str, bytes]:
    """A new key of `kind`: (full text to show once, prefix to store, hash of the secret to store)."""
    prefix = secrets.token_hex(PREFIX_LEN // 2)
    secret = secrets.token_hex(SECRET_LEN // 2)
    return f"{kind}{prefix}-{secret}", prefix, hash_secret(secret)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_key(text: str, kind: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key of `kind`, else None. Also reads Headscale's older API key form
    `<7-char prefix>.<32-char secret>`."""
    text = text.strip()
    match = re.fullmatch(
        rf"{re.escape(kind)}({_URL_SAFE}{{{PREFIX_LEN}}})-({_URL_SAFE}{{{SECRET_LEN}}})", text
    )
    if match:
        return match.group(1), match.group(2)
    if kind == API_KEY:
        legacy = _LEGACY_API_KEY.fullmatch(text)
        return (legacy.group(1), legacy.group(2)) if legacy else None
    return None


def legacy_preauth_prefix(text: str) -> str | None:
    """The stored prefix of a preauth key in Headscale's pre-v0.28 form (anything not `hskey-auth-`, kept in
    clear there); the whole text is its secret."""
    text = text.strip()
    if text.startswith(PREAUTH_KEY) or not 0 < len(text) <= MAX_LEGACY_LEN:
        return None
    return LEGACY_MARK + text[:PREFIX_LEN]


def is_bcrypt(stored_hash: bytes) -> bool:
    return stored_hash.startswith(_BCRYPT_MARK)


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    """Whether `secret` is the one `stored_hash` was made from. A bcrypt hash not yet proven costs a bcrypt
    check here, on the caller's thread: on the event loop, call `prove_bcrypt` first."""
    if not is_bcrypt(stored_hash):
        return hmac.compare_digest(hash_secret(secret), stored_hash)
    passed = _bcrypt_passed.get(stored_hash)
    if passed is not None:
        return hmac.compare_digest(hash_secret(secret), passed)
    return _check_bcrypt(secret, stored_hash)


async def prove_bcrypt(secret: str, stored_hash: bytes) -> bool:
    """Whether `secret` matches a bcrypt hash, checked on a worker thread (bcrypt is slow by design); a pass
    is remembered, so the synchronous `secret_matches` after it is cheap. True for our own SHA-256 hashes,
    which `secret_matches` checks at no cost: only a False here settles anything."""
    if not is_bcrypt(stored_hash):
        return True
    passed = _bcrypt_passed.get(stored_hash)
    if passed is None:
        async with _slots():
            passed = _bcrypt_passed.get(stored_hash)  # proven while this one waited?
            if passed is None:
                return await asyncio.to_thread(_check_bcrypt, secret, stored_hash)
    return hmac.compare_digest(hash_secret(secret), passed)


def _slots() -> asyncio.Semaphore:
    """The running loop's bcrypt semaphore (one loop in a server; tests run many, one after another)."""
    global _bcrypt_slots
    loop = asyncio.get_running_loop()
    if _bcrypt_slots is None or _bcrypt_slots[0] is not loop:
        _bcrypt_slots = (loop, asyncio.Semaphore(BCRYPT_AT_ONCE))
    return _bcrypt_slots[1]


def _check_bcrypt(secret: str, stored_hash: bytes) -> bool:
    try:
        ok = bcrypt.checkpw(secret.encode(), stored_hash)
    except ValueError:  # not a well-formed bcrypt hash
        return False
    if ok:
        _bcrypt_passed[stored_hash] = hash_secret(secret)
    return ok


def masked(kind: str, prefix: str) -> str:
    """How a key appears in logs and listings: never the secret."""
    return f"{kind}{prefix}-***"
