"""Key texts and hashes: ours (SHA-256) and those a Headscale database brings (bcrypt, older forms)."""

from __future__ import annotations

import hashlib
import threading

import bcrypt
import pytest

from pyheadscale.auth import secret_keys

# Headscale's forms: 12 + 64 characters of URL-safe base64 (dashes and underscores included).
PREFIX, SECRET = "a-Z_09bcDEfg", "Q" * 30 + "-_" + "x9" * 16
HEADSCALE_KEY = f"hskey-auth-{PREFIX}-{SECRET}"


def test_split_reads_ours_and_headscales_forms() -> None:
    text, prefix, _ = secret_keys.new_key_material(secret_keys.API_KEY)
    assert secret_keys.split_key(text, secret_keys.API_KEY) == (prefix, text.rsplit("-", 1)[1])
    assert secret_keys.split_key(HEADSCALE_KEY, secret_keys.PREAUTH_KEY) == (PREFIX, SECRET)
    legacy_api = "AbC_12-." + "s" * 32
    assert secret_keys.split_key(legacy_api, secret_keys.API_KEY) == ("AbC_12-", "s" * 32)
    for bad in ("hskey-auth-short-x", f"hskey-auth-{PREFIX}-{SECRET}!", "abc.def", ""):
        assert secret_keys.split_key(bad, secret_keys.API_KEY) is None
        assert secret_keys.split_key(bad, secret_keys.PREAUTH_KEY) is None


def test_legacy_preauth_keys_are_found_by_their_start() -> None:
    clear = "0f" * 24
    assert secret_keys.legacy_preauth_prefix(clear) == secret_keys.LEGACY_MARK + clear[:12]
    assert secret_keys.legacy_preauth_prefix(HEADSCALE_KEY) is None
    assert secret_keys.legacy_preauth_prefix("x" * 10_000) is None
    assert secret_keys.secret_matches(clear, hashlib.sha256(clear.encode()).digest())


async def test_bcrypt_hashes_are_checked_off_the_loop_once_then_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored = bcrypt.hashpw(SECRET.encode(), bcrypt.gensalt(rounds=4))
    wrong = "wrong" + SECRET[5:]
    checks: list[int] = []
    checkpw = bcrypt.checkpw

    def counted(password: bytes, hashed: bytes) -> bool:
        checks.append(threading.get_ident())
        return checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counted)
    assert secret_keys.is_bcrypt(stored)
    assert not await secret_keys.prove_bcrypt(wrong, stored)
    assert await secret_keys.prove_bcrypt(SECRET, stored)
    assert len(checks) == 2 and threading.get_ident() not in checks  # both on worker threads
    # Proven: the synchronous check and later proofs cost no bcrypt, and never accept another secret.
    assert secret_keys.secret_matches(SECRET, stored) and await secret_keys.prove_bcrypt(SECRET, stored)
    assert not secret_keys.secret_matches(wrong, stored) and not await secret_keys.prove_bcrypt(wrong, stored)
    assert len(checks) == 2
    assert await secret_keys.prove_bcrypt(SECRET, secret_keys.hash_secret(SECRET))  # ours: nothing to prove
    assert not secret_keys.secret_matches(SECRET, b"$2a$10$not-a-bcrypt-hash")
