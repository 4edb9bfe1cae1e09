"""Key text forms: prefixes, lengths and case, as Tailscale writes them."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pyheadscale import keys

RAW = bytes(range(32))
HEX = RAW.hex()


@pytest.mark.parametrize(
    "prefix",
    [
        keys.MACHINE_PUBLIC_PREFIX,
        keys.NODE_PUBLIC_PREFIX,
        keys.DISCO_PUBLIC_PREFIX,
        keys.MACHINE_PRIVATE_PREFIX,
        keys.CHALLENGE_PUBLIC_PREFIX,
    ],
)
def test_round_trip(prefix: str) -> None:
    text = keys.format_key(RAW, prefix)
    assert text == prefix + HEX
    assert keys.parse_key(text, prefix) == RAW


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("mkey:" + HEX, "nodekey:"),  # another key type's prefix
        (HEX, "nodekey:"),  # no prefix at all
        ("NODEKEY:" + HEX, "nodekey:"),  # prefix is case-sensitive
        ("nodekey:" + HEX.upper(), "lowercase"),  # Go's text form is lowercase hex
        ("nodekey:" + HEX[:-1], "64"),  # 63 digits
        ("nodekey:" + HEX + "0", "64"),  # 65 digits
        ("nodekey:" + HEX[:-1] + "g", "hex"),  # not hex
        ("nodekey:", "64"),
        ("nodekey: " + HEX[1:], "hex"),
        ("nodekey:" + HEX + "\n", "64"),  # `$` in a regex matches before a final newline
        ("nodekey:" + HEX + "\r\n", "64"),
    ],
)
def test_invalid_text_forms(text: str, fragment: str) -> None:
    with pytest.raises(keys.InvalidKeyError) as info:
        keys.parse_key(text, keys.NODE_PUBLIC_PREFIX)
    assert fragment in str(info.value)


@pytest.mark.parametrize("value", [None, 42, b"nodekey:" + HEX.encode()])
def test_non_string_rejected(value: object) -> None:
    with pytest.raises(keys.InvalidKeyError, match="nodekey:"):
        keys.parse_key(value, keys.NODE_PUBLIC_PREFIX)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_format_wrong_size(size: int) -> None:
    with pytest.raises(keys.InvalidKeyError, match="32 bytes"):
        keys.format_key(b"\x01" * size, keys.NODE_PUBLIC_PREFIX)


def test_private_key_text_and_public_derivation() -> None:
    key = keys.PrivateKey.generate()
    text = key.to_text()
    assert text.startswith("privkey:") and len(text) == len("privkey:") + 64
    again = keys.PrivateKey.from_text(text + "\n")  # key files end in a newline
    assert again == key
    expected = (
        X25519PrivateKey.from_private_bytes(key.raw).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    assert key.public() == expected
    assert "redacted" in repr(key) and key.raw.hex() not in repr(key)
    with pytest.raises(keys.InvalidKeyError):
        keys.PrivateKey.from_text("mkey:" + HEX)


def test_exchange_is_symmetric() -> None:
    a, b = keys.PrivateKey.generate(), keys.PrivateKey.generate()
    assert a.exchange(b.public()) == b.exchange(a.public())


def test_zero_key_and_helpers() -> None:
    assert keys.is_zero_key("nodekey:" + "0" * 64)
    assert keys.is_zero_key("")
    assert not keys.is_zero_key("nodekey:" + HEX)
    assert keys.machine_public_text(RAW) == "mkey:" + HEX
    assert keys.node_public_text(RAW) == "nodekey:" + HEX
    assert keys.short("nodekey:" + HEX) == "[" + HEX[:5] + "]"
