"""The login exchange: server key frame, sealed ClientInfo and ServerInfo."""

from __future__ import annotations

import json

import nacl.public
import pytest

from derp import frames, keys
from derp.frames import FrameType, ProtocolError
from derp.handshake import (
    ClientInfo,
    ServerInfo,
    decode_client_info,
    decode_server_info,
    decode_server_key,
    encode_client_info,
    encode_server_info,
    encode_server_key,
)


def split(frame: bytes) -> tuple[int, bytes]:
    frame_type, _ = frames.decode_header(frame[:5])
    return frame_type, frame[5:]


@pytest.fixture
def server_key() -> nacl.public.PrivateKey:
    return keys.generate_private_key()


@pytest.fixture
def client_key() -> nacl.public.PrivateKey:
    return keys.generate_private_key()


def test_server_key_frame_starts_with_magic(server_key: nacl.public.PrivateKey) -> None:
    public = keys.public_key_bytes(server_key)
    frame = encode_server_key(public)
    assert frame[0] == FrameType.SERVER_KEY
    assert frame[5:13] == "DERP🔑".encode()
    assert decode_server_key(*split(frame)) == public


def test_server_key_frame_tolerates_trailing_bytes_but_not_bad_magic() -> None:
    public = bytes(range(32))
    assert decode_server_key(FrameType.SERVER_KEY, frames.MAGIC + public + b"future") == public
    with pytest.raises(ProtocolError):
        decode_server_key(FrameType.SERVER_KEY, b"NOTDERP!" + public)
    with pytest.raises(ProtocolError):
        decode_server_key(FrameType.SERVER_INFO, frames.MAGIC + public)


def test_client_info_round_trip(
    server_key: nacl.public.PrivateKey, client_key: nacl.public.PrivateKey
) -> None:
    info = ClientInfo(mesh_key=bytes(range(32)), can_ack_pings=True, is_prober=True, app_name="tests")
    frame = encode_client_info(client_key, keys.public_key_bytes(server_key), info)
    client_public, decoded = decode_client_info(server_key, *split(frame))
    assert client_public == keys.public_key_bytes(client_key)
    assert decoded == info


def test_client_info_json_matches_go_field_names() -> None:
    doc = json.loads(ClientInfo(mesh_key=b"\x01" * 32, can_ack_pings=True).to_json())
    assert doc == {"meshKey": "01" * 32, "version": 2, "CanAckPings": True}
    # Go decodes field names case-insensitively; so do we.
    shouty = ClientInfo.from_json(b'{"MESHKEY": "' + b"02" * 32 + b'", "canAckPings": true}')
    assert shouty.mesh_key == b"\x02" * 32
    assert shouty.can_ack_pings


def test_client_info_sealed_to_another_server_is_rejected(client_key: nacl.public.PrivateKey) -> None:
    intended = keys.generate_private_key()
    actual = keys.generate_private_key()
    frame = encode_client_info(client_key, keys.public_key_bytes(intended), ClientInfo())
    with pytest.raises(ProtocolError):
        decode_client_info(actual, *split(frame))


def test_client_info_claiming_someone_elses_key_is_rejected(
    server_key: nacl.public.PrivateKey, client_key: nacl.public.PrivateKey
) -> None:
    frame = encode_client_info(client_key, keys.public_key_bytes(server_key), ClientInfo())
    frame_type, payload = split(frame)
    impostor = bytes(keys.generate_private_key().public_key)
    with pytest.raises(ProtocolError):
        decode_client_info(server_key, frame_type, impostor + payload[32:])


def test_client_info_with_invalid_json_is_rejected(
    server_key: nacl.public.PrivateKey, client_key: nacl.public.PrivateKey
) -> None:
    sealed = keys.seal_to(client_key, keys.public_key_bytes(server_key), b"not json")
    with pytest.raises(ProtocolError):
        decode_client_info(server_key, FrameType.CLIENT_INFO, keys.public_key_bytes(client_key) + sealed)


def test_server_info_round_trip(
    server_key: nacl.public.PrivateKey, client_key: nacl.public.PrivateKey
) -> None:
    info = ServerInfo(token_bucket_bytes_per_second=1000, token_bucket_bytes_burst=5000)
    frame = encode_server_info(server_key, keys.public_key_bytes(client_key), info)
    decoded = decode_server_info(client_key, keys.public_key_bytes(server_key), *split(frame))
    assert decoded == info


def test_box_round_trip_both_ways() -> None:
    a, b = keys.generate_private_key(), keys.generate_private_key()
    sealed = keys.seal_to(a, keys.public_key_bytes(b), b"secret")
    assert len(sealed) == 24 + 16 + len(b"secret")
    assert keys.open_from(b, keys.public_key_bytes(a), sealed) == b"secret"
    assert keys.open_from(b, keys.public_key_bytes(a), sealed[:-1] + b"x") is None


def test_key_text_forms_round_trip() -> None:
    private = keys.generate_private_key()
    assert bytes(keys.parse_node_private(keys.format_node_private(private))) == bytes(private)
    public = keys.public_key_bytes(private)
    assert keys.parse_node_public(keys.format_node_public(public)) == public
    with pytest.raises(keys.InvalidKeyError):
        keys.parse_node_public("privkey:" + public.hex())
    assert keys.parse_mesh_key(" " + "ab" * 32 + "\n") == b"\xab" * 32
    with pytest.raises(keys.InvalidKeyError):
        keys.parse_mesh_key("abcd")


def test_mesh_key_comparison() -> None:
    assert keys.mesh_keys_equal(b"\x01" * 32, b"\x01" * 32)
    assert not keys.mesh_keys_equal(b"\x01" * 32, b"\x02" * 32)
    assert not keys.mesh_keys_equal(None, b"\x01" * 32)
    assert not keys.mesh_keys_equal(bytes(32), bytes(32))
