"""The requests a node sends over the Noise channel: RegisterRequest and MapRequest (tailcfg.go's names).

Requests are parsed into pydantic models, so a malformed request becomes a clear 400 naming the field. Only
the fields the server reads are declared; the rest are ignored, as Go's decoder ignores unknown ones. What a
request carries that reaches peers (Hostinfo, Endpoints, keys) is checked here against the types a Tailscale
client decodes it into, since one wrongly typed field would fail every peer's map.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from pyheadscale.tailcfg import hostinfo as hostinfo_fields
from pyheadscale.tailcfg.gotime import parse_go_time
from pyheadscale.tailkey import DiscoPublic, NodePublic

# Oldest client capability version we serve (Tailscale v1.62, as Headscale's window goes back that far).
MIN_CAPVER = 88
MAX_ENDPOINTS = 256


class BadRequest(ValueError):
    """A request body that does not parse; the message names the field."""


def check_endpoint(text: Any) -> str:
    """An endpoint as Go's netip.AddrPort writes it: `1.2.3.4:41641` or `[fd00::1]:41641`."""
    if not isinstance(text, str):
        raise ValueError("endpoints must be strings")
    host, sep, port = text.rpartition(":")
    ok = bool(sep) and port.isdigit() and int(port) <= 0xFFFF and port == str(int(port))
    if ok and host.startswith("["):
        ok = host.endswith("]") and ":" in host
        host = host[1:-1]
    elif ok:
        ok = ":" not in host
    if ok:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            ok = False
    if not ok:
        raise ValueError(f"{text!r} is not an IP:port endpoint")
    return text


class Request(BaseModel):
    """A request body: fields the server does not read are ignored, as Go's decoder ignores unknown ones."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


RequestT = TypeVar("RequestT", bound=Request)


class AuthInfo(Request):
    Provider: str = ""
    LoginName: str = ""
    AuthKey: str = ""


def _node_key_or_empty(value: Any) -> str:
    """A node key's canonical text form (what the node table stores), or "" when absent."""
    if value in (None, ""):
        return ""
    return NodePublic.from_text(value).text


class _NodeRequest(Request):
    """What every request a node sends about itself carries: its capability version, node key and Hostinfo."""

    Version: int = 0
    NodeKey: str
    Hostinfo: dict[str, Any] | None = None

    @field_validator("Version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value and value < MIN_CAPVER:
            raise ValueError(f"client capability version {value} is too old (minimum {MIN_CAPVER})")
        return value

    @field_validator("NodeKey", mode="before")
    @classmethod
    def _key(cls, value: Any) -> str:
        # Required and non-zero: the key is the node's identity, and peers cannot decode an empty one.
        key = _node_key_or_empty(value)
        if not key:
            raise ValueError("a node key is required")
        if NodePublic.from_text(key).is_zero():
            raise ValueError("the all-zero node key is not a key")
        return key

    @field_validator("Hostinfo")
    @classmethod
    def _hostinfo(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        if value is None:
            return None
        hostinfo_fields.check_hostinfo(value)
        context = info.context or {}
        return hostinfo_fields.bound_hostinfo(
            value, context.get("hostinfo_max_bytes", hostinfo_fields.DEFAULT_MAX_BYTES)
        )


class RegisterRequest(_NodeRequest):
    OldNodeKey: str = ""
    Auth: AuthInfo | None = None
    Expiry: str | None = None
    Followup: str = ""
    Ephemeral: bool = False

    @field_validator("OldNodeKey", mode="before")
    @classmethod
    def _old_key(cls, value: Any) -> str:
        return _node_key_or_empty(value)

    @field_validator("Expiry")
    @classmethod
    def _expiry(cls, value: str | None) -> str | None:
        parse_go_time(value)
        return value

    @property
    def expiry(self) -> datetime | None:
        return parse_go_time(self.Expiry)


class MapRequest(_NodeRequest):
    Compress: str = ""
    KeepAlive: bool = False
    DiscoKey: str = ""
    Stream: bool = False
    Endpoints: list[str] | None = None
    ReadOnly: bool = False
    OmitPeers: bool = False
    MapSessionHandle: str = ""
    DebugFlags: list[str] = Field(default_factory=list)

    @field_validator("Endpoints")
    @classmethod
    def _endpoints(cls, value: list[str] | None) -> list[str] | None:
        # Pushed to every peer like Hostinfo; a client lists its interfaces' addresses and STUN results.
        if value is not None and len(value) > MAX_ENDPOINTS:
            raise ValueError(f"more than {MAX_ENDPOINTS} endpoints")
        for endpoint in value or ():
            check_endpoint(endpoint)
        return value

    @field_validator("DiscoKey", mode="before")
    @classmethod
    def _disco(cls, value: Any) -> str:
        if value in (None, ""):
            return ""
        key = DiscoPublic.from_text(value)
        return "" if key.is_zero() else key.text


def parse_request(model: type[RequestT], body: bytes, context: dict[str, Any] | None = None) -> RequestT:
    """Parse a JSON request body into `model`, raising BadRequest with the failing field's name.

    `context` carries the configured bounds (`hostinfo_max_bytes`)."""
    try:
        return model.model_validate_json(body or b"{}", context=context)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise BadRequest(f"invalid {model.__name__}: {where}: {message}") from None
