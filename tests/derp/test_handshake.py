"""The login exchange: server key frame, sealed ClientInfo and ServerInfo."""

from __future__ import annotations

import json

import pytest

from derp import frames
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
from pyheadscale.tailkey import DerpMeshKey, NodePrivate, NodePublic


def split(frame: bytes) -> tuple[int, bytes]:
    frame_type, _ = frames.decode_header(frame[:5])
    return frame_type, frame[5:]


@pytest.fixture
def server_key() -> NodePrivate:
    return NodePrivate.generate()


@pytest.fixture
def client_key() -> NodePrivate:
    return NodePrivate.generate()


def test_server_key_frame_starts_with_magic(server_key: NodePrivate) -> None:
    public = server_key.public()
    frame = encode_server_key(public)
    assert frame[0] == FrameType.SERVER_KEY
    assert frame[5:13] == "DERP🔑".encode()
    assert decode_server_key(*split(frame)) == public


def test_server_key_frame_tolerates_trailing_bytes_but_not_bad_magic() -> None:
    public = NodePublic(bytes(range(32)))
    assert decode_server_key(FrameType.SERVER_KEY, frames.MAGIC + public + b"future") == public
    with pytest.raises(ProtocolError):
        decode_server_key(FrameType.SERVER_KEY, b"NOTDERP!" + public)
    with pytest.raises(ProtocolError):
        decode_server_key(FrameType.SERVER_INFO, frames.MAGIC + public)


def test_client_info_round_trip(server_key: NodePrivate, client_key: NodePrivate) -> None:
    info = ClientInfo(
        mesh_key=DerpMeshKey(bytes(range(32))), can_ack_pings=True, is_prober=True, app_name="tests"
    )
    frame = encode_client_info(client_key, server_key.public(), info)
    client_public, decoded = decode_client_info(server_key, *split(frame))
    assert client_public == client_key.public()
    assert decoded == info


def test_client_info_json_matches_go_field_names() -> None:
    doc = json.loads(ClientInfo(mesh_key=DerpMeshKey(b"\x01" * 32), can_ack_pings=True).to_json())
    assert doc == {"meshKey": "01" * 32, "version": 2, "CanAckPings": True}
    # Go decodes field names case-insensitively; so do we.
    shouty = ClientInfo.from_json(b'{"MESHKEY": "' + b"02" * 32 + b'", "canAckPings": true}')
    assert shouty.mesh_key is not None and shouty.mesh_key.raw == b"\x02" * 32
    assert shouty.can_ack_pings


def test_client_info_sealed_to_another_server_is_rejected(client_key: NodePrivate) -> None:
    intended = NodePrivate.generate()
    actual = NodePrivate.generate()
    frame = encode_client_info(client_key, intended.public(), ClientInfo())
    with pytest.raises(ProtocolError):
        decode_client_info(actual, *split(frame))


def test_client_info_claiming_someone_elses_key_is_rejected(
    server_key: NodePrivate, client_key: NodePrivate
) -> None:
    frame = encode_client_info(client_key, server_key.public(), ClientInfo())
    frame_type, payload = split(frame)
    impostor = NodePrivate.generate().public()
    with pytest.raises(ProtocolError):
        decode_client_info(server_key, frame_type, impostor + payload[32:])


def test_client_info_with_invalid_json_is_rejected(server_key: NodePrivate, client_key: NodePrivate) -> None:
    sealed = client_key.seal_to(server_key.public(), b"not json")
    with pytest.raises(ProtocolError):
        decode_client_info(server_key, FrameType.CLIENT_INFO, client_key.public() + sealed)


def test_server_info_round_trip(server_key: NodePrivate, client_key: NodePrivate) -> None:
    info = ServerInfo(token_bucket_bytes_per_second=1000, token_bucket_bytes_burst=5000)
    frame = encode_server_info(server_key, client_key.public(), info)
    decoded = decode_server_info(client_key, server_key.public(), *split(frame))
    assert decoded == info


def test_client_info_with_a_malformed_mesh_key_is_refused_without_echoing_it() -> None:
    for text in ["ab" * 31, "ab" * 31 + "zz", "ab" * 33]:
        with pytest.raises(ProtocolError, match="ClientInfo meshKey: a mesh key") as info:
            ClientInfo.from_json(b'{"meshKey": "' + text.encode() + b'"}')
        assert "abab" not in str(info.value)
    with pytest.raises(ProtocolError, match="must be a string"):
        ClientInfo.from_json(b'{"meshKey": 7}')
