"""A client's Hostinfo: checked against tailcfg.Hostinfo's types, and bounded to what real clients send.

Hostinfo travels from a node to every peer, and a Tailscale client decodes it into a typed Go struct: one
wrongly typed field fails the peer's whole MapResponse. So `check_hostinfo` holds the fields peers decode to
tailcfg.Hostinfo's types (null is always fine).

A node's Hostinfo is stored and pushed to every peer that may see it, so its size is a cost every peer pays
on each change. `bound_hostinfo` keeps only the fields tailcfg.Hostinfo defines (v1.80 to v1.104; unknown
fields are dropped, as a Go client would drop them on decode anyway), holds every string and list to a size
no real client comes near, and the whole to `limits.hostinfo.max_bytes` of JSON. What is over a bound is
refused with an error naming the field, never silently cut: a cut Hostname or route list would be a lie. The
one exception is Services, which is informational: past MAX_SERVICES the rest are dropped.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import Any

Hostinfo = dict[str, Any]
"""A Hostinfo as stored and sent to peers: `check_hostinfo` accepted its types, `bound_hostinfo` its sizes."""

DEFAULT_MAX_BYTES = 32 << 10
MAX_STRING = 256
# SSH host keys are the one long string a client sends (an RSA-4096 public key is ~750 characters).
MAX_SSH_HOST_KEY = 4096
MAX_SSH_HOST_KEYS = 16
MAX_LIST = 256
MAX_ROUTES = 1024
# Services are informational (the host's listening ports, when the client shares them) and a busy host may
# have hundreds: past this many the rest are dropped rather than the client refused.
MAX_SERVICES = 128
MAX_DERP_LATENCIES = 256

STRING_FIELDS = frozenset(
    {
        "IPNVersion",
        "FrontendLogID",
        "BackendLogID",
        "OS",
        "OSVersion",
        "Env",
        "Distro",
        "DistroVersion",
        "DistroCodeName",
        "App",
        "Package",
        "DeviceModel",
        "PushDeviceToken",
        "Hostname",
        "Machine",
        "GoArch",
        "GoArchVar",
        "GoVersion",
        "Cloud",
        "ServicesHash",
        "ExitNodeID",
    }
)
BOOL_FIELDS = frozenset(
    {  # bool and opt.Bool: both decode only true, false and null
        "ShieldsUp",
        "ShareeNode",
        "NoLogsNoSupport",
        "RemoteConfig",
        "WireIngress",
        "IngressEnabled",
        "AllowsUpdate",
        "PeerRelay",
        "Container",
        "Desktop",
        "Userspace",
        "UserspaceRouter",
        "AppConnector",
        "StateEncrypted",
    }
)
STRING_LIST_FIELDS = frozenset({"RequestTags", "WoLMACs", "sshHostKeys"})
OBJECT_FIELDS = frozenset({"RoutableIPs", "Services", "NetInfo", "Location", "TPM"})
HOSTINFO_FIELDS = STRING_FIELDS | BOOL_FIELDS | STRING_LIST_FIELDS | OBJECT_FIELDS

NETINFO_BOOLS = frozenset(
    {
        "MappingVariesByDestIP",
        "HairPinning",  # dropped from tailcfg in v1.104, still sent by older clients
        "WorkingIPv6",
        "OSHasIPv6",
        "WorkingUDP",
        "WorkingICMPv4",
        "HavePortMap",
        "UPnP",
        "PMP",
        "PCP",
    }
)
NETINFO_FIELDS = NETINFO_BOOLS | {"PreferredDERP", "LinkType", "DERPLatency", "FirewallMode"}
SERVICE_FIELDS = frozenset({"Proto", "Port", "Description"})
LOCATION_FIELDS = frozenset(
    {"Country", "CountryCode", "City", "CityCode", "Latitude", "Longitude", "Priority"}
)
TPM_FIELDS = frozenset(
    {"Manufacturer", "Vendor", "Model", "FirmwareVersion", "SpecRevision", "FamilyIndicator"}
)


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
    _check_types(hostinfo, "Hostinfo", strings=STRING_FIELDS, bools=BOOL_FIELDS)
    for name in STRING_LIST_FIELDS:
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
            bools=NETINFO_BOOLS,
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


def _known(obj: dict[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k in fields}


def _check_strings(obj: dict[str, Any], where: str) -> None:
    for name, value in obj.items():
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise ValueError(f"{where}.{name} is longer than {MAX_STRING} characters")


def _check_list(value: Any, where: str, limit: int) -> None:
    if isinstance(value, list) and len(value) > limit:
        raise ValueError(f"{where} has more than {limit} entries")


def bound_hostinfo(hostinfo: dict[str, Any], max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """Hostinfo with only tailcfg's fields; ValueError naming the field when one is over its bound.

    Expects a Hostinfo whose types `check_hostinfo` already accepted.
    """
    out = _known(hostinfo, HOSTINFO_FIELDS)
    _check_strings(out, "Hostinfo")
    for name in ("RequestTags", "WoLMACs"):
        _check_list(out.get(name), f"Hostinfo.{name}", MAX_LIST)
        for item in out.get(name) or ():
            if len(item) > MAX_STRING:
                raise ValueError(f"Hostinfo.{name} has an entry longer than {MAX_STRING} characters")
    _check_list(out.get("sshHostKeys"), "Hostinfo.sshHostKeys", MAX_SSH_HOST_KEYS)
    for key in out.get("sshHostKeys") or ():
        if len(key) > MAX_SSH_HOST_KEY:
            raise ValueError(f"Hostinfo.sshHostKeys has a key longer than {MAX_SSH_HOST_KEY} characters")
    _check_list(out.get("RoutableIPs"), "Hostinfo.RoutableIPs", MAX_ROUTES)
    if isinstance(out.get("Services"), list):
        services = out["Services"][:MAX_SERVICES]
        out["Services"] = [_known(s, SERVICE_FIELDS) for s in services if isinstance(s, dict)]
        for service in out["Services"]:
            _check_strings(service, "Hostinfo.Services[]")
    if isinstance(out.get("NetInfo"), dict):
        netinfo = out["NetInfo"] = _known(out["NetInfo"], NETINFO_FIELDS)
        _check_strings(netinfo, "Hostinfo.NetInfo")
        latency = netinfo.get("DERPLatency")
        if isinstance(latency, dict):
            if len(latency) > MAX_DERP_LATENCIES:
                raise ValueError(f"Hostinfo.NetInfo.DERPLatency has more than {MAX_DERP_LATENCIES} entries")
            if any(len(k) > MAX_STRING for k in latency):
                raise ValueError("Hostinfo.NetInfo.DERPLatency has an overlong region name")
    for name, fields in (("Location", LOCATION_FIELDS), ("TPM", TPM_FIELDS)):
        if isinstance(out.get(name), dict):
            out[name] = _known(out[name], fields)
            _check_strings(out[name], f"Hostinfo.{name}")
    size = len(json.dumps(out, separators=(",", ":")))
    if size > max_bytes:
        raise ValueError(
            f"Hostinfo is {size} bytes of JSON, over the limit of {max_bytes} (limits.hostinfo.max_bytes)"
        )
    return out


def bound_stored_hostinfo(hostinfo: Any) -> dict[str, Any]:
    """A Hostinfo read back from the database (written before these bounds, or by Headscale) held to them:
    a row cannot be refused, so one over a bound keeps only its short scalar fields until the node sends a
    fresh Hostinfo, which it does on its next map request."""
    if not isinstance(hostinfo, dict):
        return {}
    try:
        check_hostinfo(hostinfo)
        return bound_hostinfo(hostinfo)
    except ValueError:
        return {
            k: v
            for k, v in hostinfo.items()
            if (k in STRING_FIELDS and isinstance(v, str) and len(v) <= MAX_STRING)
            or (k in BOOL_FIELDS and isinstance(v, bool))
        }
