"""Key types and text forms (tailkey): prefixes, lengths and case as Tailscale's types/key has them, and parse
errors that name the problem without ever repeating the key."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import mypy.api
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pyheadscale.tailkey import (
    ChallengePrivate,
    ChallengePublic,
    DerpMeshKey,
    DiscoPublic,
    InvalidKeyError,
    MachinePrivate,
    MachinePublic,
    NodePrivate,
    NodePublic,
)

RAW = bytes(range(32))
HEX = RAW.hex()
SECRET = bytes.fromhex("9f3c6a1be2d04d55b7a8e61c0f2394de5ab1c7e8f90d2a3b4c5d6e7f8091a2b3")

PUBLIC_TYPES = [
    (MachinePublic, "mkey:"),
    (NodePublic, "nodekey:"),
    (DiscoPublic, "discokey:"),
    (ChallengePublic, "chalpub:"),
]
PRIVATE_TYPES = [(MachinePrivate, "privkey:"), (NodePrivate, "privkey:"), (ChallengePrivate, "chalpriv:")]


def assert_no_key_material(message: str, body: str) -> None:
    """No run of eight characters of the key body appears in the message (in either case)."""
    for start in range(len(body) - 7):
        window = body[start : start + 8]
        assert window.lower() not in message.lower(), f"{message!r} repeats key material {window!r}"


@pytest.mark.parametrize("kind, prefix", PUBLIC_TYPES)
def test_public_text_round_trip(kind: type[NodePublic], prefix: str) -> None:
    key = kind(RAW)
    assert key.text == str(key) == prefix + HEX
    again = kind.from_text(key.text)
    assert type(again) is kind and bytes(again) == RAW
    assert repr(key) == f"{kind.__name__}({prefix + HEX!r})"


@pytest.mark.parametrize("kind, prefix", PUBLIC_TYPES)
def test_every_byte_value_round_trips(kind: type[NodePublic], prefix: str) -> None:
    for first in range(0, 256, 32):
        raw = bytes((first + i) % 256 for i in range(32))
        assert bytes(kind.from_text(kind(raw).text)) == raw


@pytest.mark.parametrize("kind, prefix", PRIVATE_TYPES)
def test_private_text_round_trip(kind: type[NodePrivate], prefix: str) -> None:
    key = kind.generate()
    text = key.to_text()
    assert text.startswith(prefix) and len(text) == len(prefix) + 64 and text == text.lower()
    again = kind.from_text(text)
    assert again == key and again.raw == key.raw


def test_uppercase_hex_is_read_and_written_back_lowercase() -> None:
    """Tailscale's parser takes either case; the text form we write is always lowercase."""
    key = NodePublic.from_text("nodekey:" + HEX.upper())
    assert bytes(key) == RAW and key.text == "nodekey:" + HEX


def test_public_key_is_its_raw_bytes() -> None:
    """Frames and dictionaries use the key as bytes; the typed value is interchangeable with its raw form."""
    key = NodePublic(RAW)
    assert key == RAW and hash(key) == hash(RAW)
    assert {RAW: "found"}[key] == "found"
    assert key + b"x" == RAW + b"x"


def test_short_form_is_tailscales() -> None:
    """The first five base64 digits in brackets, as ShortString prints; the zero key prints as nothing."""
    assert NodePublic(RAW).short() == "[" + base64.b64encode(RAW).decode()[:5] + "]" == "[AAECA]"
    assert NodePublic.zero().short() == ""
    assert NodePublic.zero().is_zero() and not NodePublic(RAW).is_zero()


@pytest.mark.parametrize(
    "text, problem",
    [
        ("mkey:" + HEX, "begin with 'nodekey:'"),  # another key type's prefix
        ("discokey:" + HEX, "begin with 'nodekey:'"),
        (HEX, "begin with 'nodekey:'"),  # no prefix at all
        ("NODEKEY:" + HEX, "begin with 'nodekey:'"),  # the prefix is case-sensitive
        (" nodekey:" + HEX, "begin with 'nodekey:'"),
        ("nodekey:" + HEX[:-1], "64 hex digits after 'nodekey:', got 63"),
        ("nodekey:" + HEX + "0", "got 65"),
        ("nodekey:", "got 0"),
        ("nodekey:" + HEX + "\n", "got 65"),  # no trailing newline, no surrounding space
        ("nodekey:" + HEX + "\r\n", "got 66"),
        ("nodekey:" + HEX[:-1] + "g", "not a hex digit"),
        ("nodekey: " + HEX[1:], "not a hex digit"),
        ("nodekey:" + HEX[:-2] + "٣٤", "not a hex digit"),  # Unicode digits are not hex digits
    ],
)
def test_malformed_public_text_is_refused(text: str, problem: str) -> None:
    with pytest.raises(InvalidKeyError) as info:
        NodePublic.from_text(text)
    message = str(info.value)
    assert "node key" in message and problem in message
    assert_no_key_material(message, HEX)


@pytest.mark.parametrize("value", [None, 42, b"nodekey:" + HEX.encode(), ["nodekey:" + HEX]])
def test_non_string_text_is_refused(value: object) -> None:
    with pytest.raises(InvalidKeyError, match="must be a string beginning with 'nodekey:'") as info:
        NodePublic.from_text(value)
    assert_no_key_material(str(info.value), HEX)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("nodekey:" + SECRET.hex(), "begin with 'privkey:'"),
        ("privkey:" + SECRET.hex()[:-1], "got 63"),
        ("privkey:" + SECRET.hex() + " ", "got 65"),
        ("privkey:" + SECRET.hex()[:-1] + "z", "not a hex digit"),
        ("privkey:" + SECRET.hex()[:40] + "-" + SECRET.hex()[41:], "not a hex digit"),
    ],
)
def test_private_key_errors_never_echo_the_key(text: str, problem: str) -> None:
    with pytest.raises(InvalidKeyError) as info:
        MachinePrivate.from_text(text)
    assert problem in str(info.value)
    assert_no_key_material(str(info.value), SECRET.hex())


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_wrong_raw_size_is_refused(size: int) -> None:
    with pytest.raises(InvalidKeyError, match=f"is 32 bytes, got {size}"):
        NodePublic(b"\x01" * size)
    with pytest.raises(InvalidKeyError, match=f"is 32 bytes, got {size}"):
        NodePrivate(b"\x01" * size)
    with pytest.raises(InvalidKeyError, match=f"is 32 bytes, got {size}"):
        DerpMeshKey(b"\x01" * size)


def test_raw_must_be_bytes() -> None:
    with pytest.raises(InvalidKeyError, match="32 raw bytes, got str"):
        NodePublic(HEX[:32])  # type: ignore[arg-type]


def test_private_key_public_half_and_secrecy() -> None:
    key = MachinePrivate.generate()
    expected = (
        X25519PrivateKey.from_private_bytes(key.raw).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    public = key.public()
    assert type(public) is MachinePublic and public == expected
    assert repr(key) == "MachinePrivate(<redacted>)" and key.raw.hex() not in repr(key)
    assert key.raw[0] & 7 == 0 and key.raw[31] & 0xC0 == 0x40  # clamped at creation, as Tailscale's are
    with pytest.raises(TypeError):
        hash(key)


def test_private_keys_of_different_roles_are_not_equal() -> None:
    machine = MachinePrivate(SECRET)
    assert machine == MachinePrivate(SECRET)
    assert machine != NodePrivate(SECRET)
    assert machine != MachinePrivate(RAW)
    # Machine and node keys share the `privkey:` form, as tailscaled's state file has them.
    assert NodePrivate.from_text(machine.to_text()).raw == SECRET


def test_exchange_is_symmetric() -> None:
    a, b = MachinePrivate.generate(), MachinePrivate.generate()
    assert a.exchange(b.public()) == b.exchange(a.public())


def test_sealed_box_round_trip_and_tampering() -> None:
    a, b = NodePrivate.generate(), NodePrivate.generate()
    sealed = a.seal_to(b.public(), b"secret")
    assert len(sealed) == 24 + 16 + len(b"secret")
    assert b.open_from(a.public(), sealed) == b"secret"
    assert b.open_from(a.public(), sealed[:-1] + bytes([sealed[-1] ^ 1])) is None
    assert b.open_from(NodePrivate.generate().public(), sealed) is None
    assert b.open_from(a.public(), sealed[:23]) is None


def test_mesh_key_text_and_comparison() -> None:
    key = DerpMeshKey.from_text(" " + "ab" * 32 + "\n")  # read from a file: surrounding space ignored
    assert key.raw == b"\xab" * 32 and key.to_text() == "ab" * 32
    assert DerpMeshKey.from_text("AB" * 32).matches(key)
    assert not key.matches(DerpMeshKey(b"\xac" * 32))
    assert not key.matches(None)
    assert not DerpMeshKey(bytes(32)).matches(DerpMeshKey(bytes(32)))  # the zero key never matches
    assert repr(key) == "DerpMeshKey(<redacted>)"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("abcd", "must have 64 hex digits, got 4"),
        ("ab" * 31 + "zz", "not a hex digit"),
        ("ab" * 33, "got 66"),
        (None, "must be a string of hex digits, got NoneType"),
    ],
)
def test_malformed_mesh_key_is_refused(text: object, problem: str) -> None:
    with pytest.raises(InvalidKeyError) as info:
        DerpMeshKey.from_text(text)
    assert "mesh key" in str(info.value) and problem in str(info.value)
    assert_no_key_material(str(info.value), "ab" * 32)


def test_mypy_tells_key_roles_apart(tmp_path: Path) -> None:
    """The point of the types: a machine key where a node key belongs, or raw bytes, is a type error."""
    program = tmp_path / "mixup.py"
    program.write_text(
        textwrap.dedent(
            """
            from pyheadscale.tailkey import MachinePrivate, MachinePublic, NodePrivate, NodePublic

            def route(key: NodePublic) -> None: ...

            route(MachinePublic(bytes(32)))
            route(bytes(32))
            route(NodePrivate.generate().public())
            machine: MachinePublic = NodePrivate.generate().public()
            NodePrivate.generate().seal_to(MachinePrivate.generate().public(), b"")
            """
        )
    )
    out, _, status = mypy.api.run(
        [str(program), "--cache-dir", str(tmp_path / "cache"), "--no-error-summary", "--hide-error-context"]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert status == 1
    assert [int(line.split(":")[1]) for line in errors] == [6, 7, 9, 10], out
