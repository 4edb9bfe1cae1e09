"""The DERP login exchange: ServerKey, then sealed ClientInfo, then sealed ServerInfo.

The server opens with its public key behind :data:`derp.frames.MAGIC`.  The
client answers with its own public key and a NaCl box (to the server's key)
holding ClientInfo JSON, which proves it owns the private key it claims.  The
server replies with a box holding ServerInfo JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from derp.frames import (
    KEY_LEN,
    MAGIC,
    MAX_CLIENT_INFO_LEN,
    MAX_SERVER_INFO_LEN,
    NONCE_LEN,
    PROTOCOL_VERSION,
    FrameType,
    ProtocolError,
    encode_frame,
)
from pyheadscale.tailkey import DerpMeshKey, InvalidKeyError, NodePrivate, NodePublic


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What a client tells the server about itself when logging in."""

    mesh_key: DerpMeshKey | None = None
    """Pre-shared key of trusted mesh peers; absent for ordinary nodes."""
    version: int = PROTOCOL_VERSION
    can_ack_pings: bool = False
    is_prober: bool = False
    app_name: str = ""

    def to_json(self) -> bytes:
        # Field names follow the Go client's JSON so either side interoperates.
        doc: dict[str, Any] = {}
        if self.mesh_key:
            doc["meshKey"] = self.mesh_key.to_text()
        if self.version:
            doc["version"] = self.version
        doc["CanAckPings"] = self.can_ack_pings
        if self.is_prober:
            doc["IsProber"] = True
        if self.app_name:
            doc["AppName"] = self.app_name
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ClientInfo:
        doc = _json_object(raw, "ClientInfo")
        mesh_key = None
        mesh_text = doc.get("meshkey")
        if mesh_text:
            try:
                mesh_key = DerpMeshKey.from_text(mesh_text)
            except InvalidKeyError as exc:
                raise ProtocolError(f"ClientInfo meshKey: {exc}") from exc
        return cls(
            mesh_key=mesh_key,
            version=_int_field(doc, "version"),
            can_ack_pings=bool(doc.get("canackpings", False)),
            is_prober=bool(doc.get("isprober", False)),
            app_name=str(doc.get("appname", "") or ""),
        )


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the server tells a client after accepting it."""

    version: int = PROTOCOL_VERSION
    token_bucket_bytes_per_second: int = 0
    token_bucket_bytes_burst: int = 0

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {}
        if self.version:
            doc["version"] = self.version
        if self.token_bucket_bytes_per_second:
            doc["TokenBucketBytesPerSecond"] = self.token_bucket_bytes_per_second
        if self.token_bucket_bytes_burst:
            doc["TokenBucketBytesBurst"] = self.token_bucket_bytes_burst
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ServerInfo:
        doc = _json_object(raw, "ServerInfo")
        return cls(
            version=_int_field(doc, "version"),
            token_bucket_bytes_per_second=_int_field(doc, "tokenbucketbytespersecond"),
            token_bucket_bytes_burst=_int_field(doc, "tokenbucketbytesburst"),
        )


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    """Decode a JSON object with lower-cased keys: Go's decoder matches names case-insensitively."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: arrays nested thousands deep, which any client can box up and send before login.
        raise ProtocolError(f"{what} is not valid JSON") from exc
    if not isinstance(doc, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    return {str(k).lower(): v for k, v in doc.items()}


def _int_field(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"field {name!r} must be an integer")
    return value


def encode_server_key(server_public: bytes) -> bytes:
    """The first frame on every connection."""
    return encode_frame(FrameType.SERVER_KEY, MAGIC + server_public)


def decode_server_key(frame_type: int, payload: bytes) -> NodePublic:
    """Return the server's public key; trailing bytes are allowed for future use."""
    if frame_type != FrameType.SERVER_KEY or len(payload) < len(MAGIC) + KEY_LEN:
        raise ProtocolError("invalid server greeting")
    if payload[: len(MAGIC)] != MAGIC:
        raise ProtocolError("server greeting lacks the DERP magic")
    return NodePublic(payload[len(MAGIC) : len(MAGIC) + KEY_LEN])


def encode_client_info(client_private: NodePrivate, server_public: NodePublic, info: ClientInfo) -> bytes:
    sealed = client_private.seal_to(server_public, info.to_json())
    return encode_frame(FrameType.CLIENT_INFO, client_private.public() + sealed)


def decode_client_info(
    server_private: NodePrivate, frame_type: int, payload: bytes
) -> tuple[NodePublic, ClientInfo]:
    """Authenticate a ClientInfo frame; return (client public key, info)."""
    if frame_type != FrameType.CLIENT_INFO:
        raise ProtocolError(f"expected ClientInfo frame, got type {frame_type:#x}")
    if len(payload) < KEY_LEN + NONCE_LEN:
        raise ProtocolError("short ClientInfo frame")
    if len(payload) > MAX_CLIENT_INFO_LEN:
        raise ProtocolError("ClientInfo frame too large")
    client_public = NodePublic(payload[:KEY_LEN])
    cleartext = server_private.open_from(client_public, payload[KEY_LEN:])
    if cleartext is None:
        raise ProtocolError("ClientInfo box does not open with the claimed client key")
    return client_public, ClientInfo.from_json(cleartext)


def encode_server_info(server_private: NodePrivate, client_public: NodePublic, info: ServerInfo) -> bytes:
    return encode_frame(FrameType.SERVER_INFO, server_private.seal_to(client_public, info.to_json()))


def decode_server_info(
    client_private: NodePrivate, server_public: NodePublic, frame_type: int, payload: bytes
) -> ServerInfo:
    if frame_type != FrameType.SERVER_INFO:
        raise ProtocolError(f"expected ServerInfo frame, got type {frame_type:#x}")
    if len(payload) < NONCE_LEN or len(payload) > MAX_SERVER_INFO_LEN:
        raise ProtocolError("ServerInfo frame has an invalid length")
    cleartext = client_private.open_from(server_public, payload)
    if cleartext is None:
        raise ProtocolError("ServerInfo box does not open with the server key")
    return ServerInfo.from_json(cleartext)
