"""pyheadscale's own `limits:` section (Headscale has no such keys): what a stranger can make us hold or do.

README "Limits" lists each key with its default; config.example.yaml shows them all.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from pyheadscale.config_section import Section, parse_duration

log = logging.getLogger(__name__)


class RateConfig(Section):
    """A token bucket per source address: `burst` at once, refilled at `per_second`."""

    per_second: float = Field(gt=0)
    burst: int = Field(ge=1)


class ConnectionLimits(Section):
    max: int = Field(default=8192, ge=1)
    per_source: int = Field(default=512, ge=1)
    # A connection must finish its request head within this long of connecting (or of its last response).
    header_timeout: timedelta = timedelta(seconds=15)
    # A request body (plain HTTP, or an HTTP/2 request inside TS2021) must arrive within this long.
    request_timeout: timedelta = timedelta(seconds=30)
    # A TS2021 connection with no open request is closed after this long.
    idle_timeout: timedelta = timedelta(minutes=2)

    @field_validator("header_timeout", "request_timeout", "idle_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        duration = parse_duration(value)
        if duration.total_seconds() <= 0:
            raise ValueError(f"{value!r} must be a positive duration")
        return duration


class HTTP2Limits(Section):
    connection_buffer_bytes: int = Field(default=2 << 20, ge=64 << 10)
    total_buffer_bytes: int = Field(default=64 << 20, ge=64 << 10)


class RateLimits(Section):
    handshakes: RateConfig = RateConfig(per_second=10, burst=100)
    registrations: RateConfig = RateConfig(per_second=5, burst=50)
    api_auth_failures: RateConfig = RateConfig(per_second=0.2, burst=10)
    # Audit entries for refusals of unauthenticated requests; beyond this they are only counted.
    audit_refusals: RateConfig = RateConfig(per_second=1, burst=20)


class LoginLimits(Section):
    max_pending: int = Field(default=10_000, ge=1)
    max_pending_per_source: int = Field(default=32, ge=1)


class AuditLimits(Section):
    field_length: int = Field(default=512, ge=16)
    memory_bytes: int = Field(default=16 << 20, ge=64 << 10)
    file_max_bytes: int = Field(default=64 << 20, ge=64 << 10)
    file_backups: int = Field(default=3, ge=0)


class HostinfoLimits(Section):
    max_bytes: int = Field(default=32 << 10, ge=1024)


class LimitsConfig(Section):
    """pyheadscale's own `limits:` section (Headscale has no such keys): what a stranger can make us hold."""

    connections: ConnectionLimits = ConnectionLimits()
    http2: HTTP2Limits = HTTP2Limits()
    rate: RateLimits = RateLimits()
    logins: LoginLimits = LoginLimits()
    audit: AuditLimits = AuditLimits()
    hostinfo: HostinfoLimits = HostinfoLimits()

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, value: Any) -> Any:
        """A misspelt limit would silently keep its default: say so, as for unknown top-level keys."""

        def walk(raw: Any, model: type[BaseModel], where: str) -> None:
            if not isinstance(raw, dict):
                return
            for key, item in raw.items():
                info = model.model_fields.get(key)
                if info is None:
                    log.warning("config: unknown key %r is ignored", f"{where}.{key}")
                elif isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
                    walk(item, info.annotation, f"{where}.{key}")

        walk(value, cls, "limits")
        return value
