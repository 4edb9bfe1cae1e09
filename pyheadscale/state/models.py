"""Domain records owned by the in-memory store.

Frozen dataclasses: the store is their one owner, the database layer persists them and the mapper reads them.
A change makes a new record (`dataclasses.replace`) that takes the old one's place, so a reader holding a
record holds a consistent snapshot, and a cache keyed by the record (the map builder's) is current exactly
while the store still holds that same object. (The list and dict fields are shared with the new record when
unchanged, and are never modified in place either.)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address
Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    display_name: str = ""
    email: str = ""
    provider: str = ""
    provider_id: str = ""
    profile_pic_url: str = ""
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PreAuthKey:
    """A preauth key. Only a hash of the secret part is kept; `prefix` identifies the key in listings."""

    id: int
    prefix: str
    secret_hash: bytes
    user_id: int | None
    reusable: bool = False
    ephemeral: bool = False
    used: bool = False
    tags: list[str] = field(default_factory=list)
    created_at: datetime | None = None
    expiration: datetime | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key for the REST API. Like preauth keys, only the prefix and a hash of the secret are kept."""

    id: int
    prefix: str
    secret_hash: bytes
    created_at: datetime | None = None
    expiration: datetime | None = None
    last_seen: datetime | None = None


@dataclass(frozen=True, slots=True)
class Node:
    """A registered node. Keys are kept in their text forms (`mkey:…`, `nodekey:…`, `discokey:…`)."""

    id: int
    machine_key: str
    node_key: str
    disco_key: str = ""
    hostname: str = ""
    given_name: str = ""
    user_id: int | None = None
    tags: list[str] = field(default_factory=list)
    ipv4: IPv4 | None = None
    ipv6: IPv6 | None = None
    endpoints: list[str] = field(default_factory=list)
    hostinfo: dict[str, Any] = field(default_factory=dict)
    register_method: str = "authkey"
    auth_key_id: int | None = None
    ephemeral: bool = False
    expiry: datetime | None = None
    last_seen: datetime | None = None
    approved_routes: list[str] = field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def is_tagged(self) -> bool:
        return bool(self.tags)

    @property
    def home_derp(self) -> int:
        netinfo = self.hostinfo.get("NetInfo") or {}
        return int(netinfo.get("PreferredDERP") or 0)

    @property
    def announced_routes(self) -> list[str]:
        return list(self.hostinfo.get("RoutableIPs") or [])

    def addresses(self) -> list[str]:
        """The node's tailnet addresses as host prefixes, IPv4 first (the order clients expect)."""
        out = []
        if self.ipv4 is not None:
            out.append(f"{self.ipv4}/32")
        if self.ipv6 is not None:
            out.append(f"{self.ipv6}/128")
        return out
