"""Wire types of the control protocol (tailscale's tailcfg), as far as the server reads or writes them.

Requests are parsed into pydantic models, so a malformed request becomes a clear 400 naming the field.
Responses are built as plain dicts with tailcfg's field names and serialized once per message: the map path is
the hot path and dicts are cheaper than model instances there. Field names and encodings follow tailcfg.go
exactly (Go's JSON: times in RFC 3339 with a trailing Z, the zero time as 0001-01-01T00:00:00Z, keys in their
text forms).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from pyheadscale.mapper import hostinfo as hostinfo_fields
from tailkey import DiscoPublic, NodePublic

GO_ZERO_TIME = "0001-01-01T00:00:00Z"
TAGGED_DEVICES_USER_ID = 2147455555
# Clients from this capability version on read Node.HomeDERP; older ones want the legacy "127.3.3.40:N"
# string.
CAPVER_HOME_DERP = 111
# Clients from this capability version on understand MapResponse.PacketFilters (named, incremental filters).
CAPVER_PACKET_FILTERS = 81
# Oldest client capability version we serve (Tailscale v1.62, as Headscale's window goes back that far).
MIN_CAPVER = 88
MAX_ENDPOINTS = 256


class BadRequest(ValueError):
    """A request body that does not parse; the message names the field."""


@functools.lru_cache(maxsize=16384)
def go_time(value: datetime | None) -> str:
    """A time as Go's JSON writes it. Cached: every full map formats each offline peer's LastSeen."""
    if value is None:
        return GO_ZERO_TIME
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def parse_go_time(text: str | None) -> datetime | None:
    """Parse a Go RFC 3339 time; the zero time and absent values are None.

    Raises ValueError for anything Go's time.Time would not decode, including a time without a zone.
    """
    if not text or text.startswith("0001-01-01"):
        return None
    cleaned = text.replace("Z", "+00:00")
    # Go writes up to nanoseconds; Python's parser takes microseconds.
    if "." in cleaned:
        head, _, rest = cleaned.partition(".")
        digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]
        zone = rest[len(digits) :]
        cleaned = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None or "T" not in cleaned:
        raise ValueError(f"{text!r} is not an RFC 3339 time (date, time and zone are required)")
    return parsed.astimezone(UTC)


# Hostinfo and Endpoints travel from a node to every peer, and a Tailscale client decodes them into typed Go
# structs: one wrongly typed field fails the peer's whole MapResponse. So the fields peers decode are checked
# here against tailcfg.Hostinfo's types (null is always fine), then `bound_hostinfo` drops unknown fields and
# holds the rest to real clients' sizes.
_HOSTINFO_STRINGS = hostinfo_fields.STRING_FIELDS
_HOSTINFO_BOOLS = hostinfo_fields.BOOL_FIELDS
_HOSTINFO_STRING_LISTS = hostinfo_fields.STRING_LIST_FIELDS
_NETINFO_BOOLS = hostinfo_fields.NETINFO_BOOLS


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_types(
    obj: dict[str, Any],
    where: str,
    strings: Iterable[str] = (),
    bools: Iterable[str] = (),
    ints: Iterable[str] = (),
    numbers: Iterable[str] = (),
) -> None:
    checks = [
        (strings, lambda v: isinstance(v, str), "a string"),
        (bools, lambda v: isinstance(v, bool), "a bool"),
        (ints, _is_int, "an integer"),
        (numbers, _is_number, "a number"),
    ]
    for names, ok, what in checks:
        for name in names:
            value = obj.get(name)
            if value is not None and not ok(value):
                raise ValueError(f"{where}.{name} must be {what}")


def _object(value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list")
    return value


def check_hostinfo(hostinfo: dict[str, Any]) -> None:
    """Raise ValueError naming the first Hostinfo field a Tailscale client could not decode."""
    _check_types(hostinfo, "Hostinfo", strings=_HOSTINFO_STRINGS, bools=_HOSTINFO_BOOLS)
    for name in _HOSTINFO_STRING_LISTS:
        if not all(isinstance(v, str) for v in _list(hostinfo.get(name), f"Hostinfo.{name}")):
            raise ValueError(f"Hostinfo.{name} must be a list of strings")
    for prefix in _list(hostinfo.get("RoutableIPs"), "Hostinfo.RoutableIPs"):
        try:
            if not isinstance(prefix, str) or "/" not in prefix:
                raise ValueError(prefix)
            ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            raise ValueError(f"Hostinfo.RoutableIPs: {prefix!r} is not an IP prefix") from None
    for service in _list(hostinfo.get("Services"), "Hostinfo.Services"):
        service = _object(service, "Hostinfo.Services[]") or {}
        _check_types(service, "Hostinfo.Services[]", strings=("Proto", "Description"), ints=("Port",))
        if not 0 <= service.get("Port", 0) <= 0xFFFF:
            raise ValueError("Hostinfo.Services[].Port must be a port number")
    netinfo = _object(hostinfo.get("NetInfo"), "Hostinfo.NetInfo")
    if netinfo is not None:
        _check_types(
            netinfo,
            "Hostinfo.NetInfo",
            strings=("LinkType", "FirewallMode"),
            bools=_NETINFO_BOOLS,
            ints=("PreferredDERP",),
        )
        latency = _object(netinfo.get("DERPLatency"), "Hostinfo.NetInfo.DERPLatency") or {}
        if not all(_is_number(v) for v in latency.values()):
            raise ValueError("Hostinfo.NetInfo.DERPLatency values must be numbers")
    location = _object(hostinfo.get("Location"), "Hostinfo.Location")
    if location is not None:
        _check_types(
            location,
            "Hostinfo.Location",
            strings=("Country", "CountryCode", "City", "CityCode"),
            numbers=("Latitude", "Longitude"),
            ints=("Priority",),
        )
    _object(hostinfo.get("TPM"), "Hostinfo.TPM")


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


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


WireT = TypeVar("WireT", bound=_Wire)


class AuthInfo(_Wire):
    Provider: str = ""
    LoginName: str = ""
    AuthKey: str = ""


def _node_key_or_empty(value: Any) -> str:
    """A node key's canonical text form (what the node table stores), or "" when absent."""
    if value in (None, ""):
        return ""
    return NodePublic.from_text(value).text


class _NodeRequest(_Wire):
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
        check_hostinfo(value)
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


def parse_request(model: type[WireT], body: bytes, context: dict[str, Any] | None = None) -> WireT:
    """Parse a JSON request body into `model`, raising BadRequest with the failing field's name.

    `context` carries the configured bounds (`hostinfo_max_bytes`)."""
    try:
        return model.model_validate_json(body or b"{}", context=context)
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


def register_response(
    *,
    user: dict[str, Any] | None = None,
    login: dict[str, Any] | None = None,
    authorized: bool = False,
    expired: bool = False,
    auth_url: str = "",
    error: str = "",
) -> dict[str, Any]:
    return {
        "User": user or {},
        "Login": login or {},
        "NodeKeyExpired": expired,
        "MachineAuthorized": authorized,
        "AuthURL": auth_url,
        "Error": error,
    }
