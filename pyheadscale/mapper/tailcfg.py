"""Wire types of the control protocol (tailscale's tailcfg), as far as the server reads or writes them.

Requests are parsed into pydantic models, so a malformed request becomes a clear 400 naming the field. Responses are
built as plain dicts with tailcfg's field names and serialized once per message: the map path is the hot path and
dicts are cheaper than model instances there. Field names and encodings follow tailcfg.go exactly (Go's JSON: times
in RFC 3339 with a trailing Z, the zero time as 0001-01-01T00:00:00Z, keys in their text forms).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pyheadscale import keys

GO_ZERO_TIME = "0001-01-01T00:00:00Z"
TAGGED_DEVICES_USER_ID = 2147455555
# Clients from this capability version on read Node.HomeDERP; older ones want the legacy "127.3.3.40:N" string.
CAPVER_HOME_DERP = 111
# Clients from this capability version on understand MapResponse.PacketFilters (named, incremental filters).
CAPVER_PACKET_FILTERS = 81
# Oldest client capability version we serve (Tailscale v1.62, as Headscale's window goes back that far).
MIN_CAPVER = 88


class BadRequest(ValueError):
    """A request body that does not parse; the message names the field."""


def go_time(value: datetime | None) -> str:
    if value is None:
        return GO_ZERO_TIME
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def parse_go_time(text: str | None) -> datetime | None:
    """Parse a Go RFC 3339 time; the zero time and absent values are None."""
    if not text or text.startswith("0001-01-01"):
        return None
    cleaned = text.replace("Z", "+00:00")
    # Go writes up to nanoseconds; Python's parser takes microseconds.
    if "." in cleaned:
        head, _, rest = cleaned.partition(".")
        digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]
        zone = rest[len(digits):]
        cleaned = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    return datetime.fromisoformat(cleaned).astimezone(UTC)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


WireT = TypeVar("WireT", bound=_Wire)


class AuthInfo(_Wire):
    Provider: str = ""
    LoginName: str = ""
    AuthKey: str = ""


def _node_key_or_empty(value: Any) -> str:
    if value in (None, ""):
        return ""
    keys.parse_key(value, keys.NODE_PUBLIC_PREFIX)
    return str(value)


class RegisterRequest(_Wire):
    Version: int = 0
    NodeKey: str
    OldNodeKey: str = ""
    Auth: AuthInfo | None = None
    Expiry: str | None = None
    Followup: str = ""
    Hostinfo: dict[str, Any] | None = None
    Ephemeral: bool = False

    @field_validator("NodeKey", "OldNodeKey", mode="before")
    @classmethod
    def _key(cls, value: Any) -> str:
        return _node_key_or_empty(value)

    @property
    def expiry(self) -> datetime | None:
        return parse_go_time(self.Expiry)


class MapRequest(_Wire):
    Version: int = 0
    Compress: str = ""
    KeepAlive: bool = False
    NodeKey: str
    DiscoKey: str = ""
    Stream: bool = False
    Hostinfo: dict[str, Any] | None = None
    Endpoints: list[str] | None = None
    ReadOnly: bool = False
    OmitPeers: bool = False
    MapSessionHandle: str = ""
    DebugFlags: list[str] = Field(default_factory=list)

    @field_validator("NodeKey", mode="before")
    @classmethod
    def _key(cls, value: Any) -> str:
        return _node_key_or_empty(value)

    @field_validator("DiscoKey", mode="before")
    @classmethod
    def _disco(cls, value: Any) -> str:
        if value in (None, "") or keys.is_zero_key(str(value)):
            return ""
        keys.parse_key(value, keys.DISCO_PUBLIC_PREFIX)
        return str(value)


def parse_request(model: type[WireT], body: bytes) -> WireT:
    """Parse a JSON request body into `model`, raising BadRequest with the failing field's name."""
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise BadRequest(f"invalid {model.__name__}: {where}: {message}") from None


def user_profile(user_id: int, login_name: str, display_name: str, picture: str = "") -> dict[str, Any]:
    profile: dict[str, Any] = {"ID": user_id, "LoginName": login_name, "DisplayName": display_name}
    if picture:
        profile["ProfilePicURL"] = picture
    return profile


def register_response(*, user: dict[str, Any] | None = None, login: dict[str, Any] | None = None,
                      authorized: bool = False, expired: bool = False, auth_url: str = "",
                      error: str = "") -> dict[str, Any]:
    return {
        "User": user or {},
        "Login": login or {},
        "NodeKeyExpired": expired,
        "MachineAuthorized": authorized,
        "AuthURL": auth_url,
        "Error": error,
    }
