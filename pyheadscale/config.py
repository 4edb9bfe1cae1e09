"""Configuration: Headscale's config.yaml keys, validated, with embedded defaults for a one-command start.

A missing file is not an error: `pyheadscale serve` with no config runs on the defaults below, keeping its
database, keys and socket in one data directory. A present file is validated strictly, and every error names
the dotted key and what was wrong with it (e.g. `prefixes.v4: '100.64.0.0/33' is not a valid IPv4 prefix`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from pyheadscale import config_keys
from pyheadscale.config_database import DatabaseConfig, PostgresConfig, SqliteConfig
from pyheadscale.config_keys import ConfigError
from pyheadscale.config_limits import LimitsConfig
from pyheadscale.config_oidc import OIDCConfig, PKCEConfig
from pyheadscale.config_section import Section, parse_duration

__all__ = [
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "LimitsConfig",
    "OIDCConfig",
    "PKCEConfig",
    "PostgresConfig",
    "SqliteConfig",
    "build_config",
    "load_config",
    "parse_duration",
]

log = logging.getLogger(__name__)

CONFIG_SEARCH_PATHS = ("/etc/headscale/config.yaml", "~/.headscale/config.yaml", "./config.yaml")


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


class NoiseConfig(Section):
    private_key_path: str = "noise_private.key"


class PrefixesConfig(Section):
    v4: str | None = "100.64.0.0/10"
    v6: str | None = "fd7a:115c:a1e0::/48"
    allocation: Literal["sequential", "random"] = "sequential"

    @field_validator("v4")
    @classmethod
    def _v4(cls, value: str | None) -> str | None:
        if value:
            try:
                ipaddress.IPv4Network(value)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a valid IPv4 prefix ({exc})") from None
        return value or None

    @field_validator("v6")
    @classmethod
    def _v6(cls, value: str | None) -> str | None:
        if value:
            try:
                ipaddress.IPv6Network(value)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a valid IPv6 prefix ({exc})") from None
        return value or None

    @model_validator(mode="after")
    def _one_family(self) -> PrefixesConfig:
        if not self.v4 and not self.v6:
            raise ValueError("at least one of prefixes.v4 and prefixes.v6 must be set")
        return self


class DerpServerConfig(Section):
    enabled: bool = False
    region_id: int = 999
    region_code: str = "headscale"
    region_name: str = "Headscale Embedded DERP"
    verify_clients: bool = True
    stun_listen_addr: str = "0.0.0.0:3478"
    private_key_path: str = "derp_server_private.key"
    automatically_add_embedded_derp_region: bool = True
    ipv4: str | None = None
    ipv6: str | None = None

    @field_validator("stun_listen_addr")
    @classmethod
    def _stun(cls, value: str) -> str:
        _host_port(value)
        return value

    @field_validator("region_id")
    @classmethod
    def _region(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError(f"{value} is not a DERP region id (1-65535)")
        return value


class DerpConfig(Section):
    server: DerpServerConfig = DerpServerConfig()
    urls: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    auto_update_enabled: bool = True
    update_frequency: timedelta = timedelta(hours=3)

    @field_validator("update_frequency", mode="before")
    @classmethod
    def _freq(cls, value: Any) -> timedelta:
        return parse_duration(value)

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return value


class NameserversConfig(Section):
    global_: list[str] = Field(default_factory=list, alias="global")
    split: dict[str, list[str]] = Field(default_factory=dict)


class DNSConfig(Section):
    magic_dns: bool = True
    base_domain: str = "tailnet.internal"
    override_local_dns: bool = True
    nameservers: NameserversConfig = NameserversConfig()
    search_domains: list[str] = Field(default_factory=list)
    extra_records: list[dict[str, str]] = Field(default_factory=list)
    # A JSON file of extra records, re-read when it changes; exclusive with extra_records.
    extra_records_path: str = ""

    @field_validator("base_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if value and not re.fullmatch(
            r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*", value
        ):
            raise ValueError(f"{value!r} is not a valid domain name")
        return value.lower()

    @model_validator(mode="after")
    def _records_source(self) -> DNSConfig:
        if "extra_records" in self.model_fields_set and self.extra_records_path:
            raise ValueError(
                "extra_records and extra_records_path are mutually exclusive: remove one of them"
            )
        return self


class PolicyConfig(Section):
    mode: Literal["file", "database"] = "file"
    path: str = ""


class LogConfig(Section):
    level: Literal["trace", "debug", "info", "warn", "warning", "error", "fatal", "panic"] = "info"
    format: Literal["text", "json"] = "text"


class EphemeralConfig(Section):
    inactivity_timeout: timedelta = timedelta(seconds=120)

    @field_validator("inactivity_timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> timedelta:
        return parse_duration(value)


class HARoutesConfig(Section):
    """Health probes of HA subnet routers (`node.routes.ha`); a `probe_interval` of 0 turns them off."""

    probe_interval: timedelta = timedelta(seconds=10)
    probe_timeout: timedelta = timedelta(seconds=5)

    @field_validator("probe_interval", "probe_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        return parse_duration(value)

    @model_validator(mode="after")
    def _bounds(self) -> HARoutesConfig:
        interval, timeout = self.probe_interval.total_seconds(), self.probe_timeout.total_seconds()
        if interval == 0:
            return self
        if interval < 2:
            raise ValueError(f"probe_interval ({interval:g}s) must be 0 (off) or at least 2s")
        if timeout < 1:
            raise ValueError(f"probe_timeout ({timeout:g}s) must be at least 1s")
        if timeout >= interval:
            raise ValueError(f"probe_timeout ({timeout:g}s) must be less than probe_interval ({interval:g}s)")
        return self


class RoutesConfig(Section):
    ha: HARoutesConfig = HARoutesConfig()


class NodeConfig(Section):
    # Default key lifetime of nodes owned by a user (tagged nodes never expire); 0 means never.
    expiry: timedelta = timedelta(0)
    ephemeral: EphemeralConfig = EphemeralConfig()
    routes: RoutesConfig = RoutesConfig()

    @field_validator("expiry", mode="before")
    @classmethod
    def _expiry(cls, value: Any) -> timedelta:
        return parse_duration(value)

    def expiry_for(self, *, tagged: bool, requested: datetime | None, at: datetime) -> datetime | None:
        """A registering node's key expiry, as Headscale chooses it: tagged nodes never expire; otherwise the
        client's requested expiry when it asked for one, else `expiry` from now (none when it is 0)."""
        if tagged:
            return None
        if requested is not None and requested > at:
            return requested
        return at + self.expiry if self.expiry > timedelta(0) else None


class TaildropConfig(Section):
    """Taildrop file sharing between a user's own nodes (on by default, as in Headscale)."""

    enabled: bool = True


class AutoUpdateConfig(Section):
    """The tailnet-wide default for clients' auto-update, sent to every node as a capability."""

    enabled: bool = False


class LogTailConfig(Section):
    """Client log upload to Tailscale's servers: off unless asked for (pyheadscale never turns it on)."""

    enabled: bool = False


class CLIConfig(Section):
    """Where the management CLI connects when not over the local socket (or HEADSCALE_CLI_*)."""

    address: str = ""
    api_key: SecretStr = SecretStr("")
    timeout: timedelta = timedelta(seconds=5)
    insecure: bool = False

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> timedelta:
        return parse_duration(value)


CHALLENGE_TYPES = ("HTTP-01", "TLS-ALPN-01")


class Config(Section):
    """The whole configuration. Relative paths are resolved against `data_dir` by `resolve_paths`."""

    server_url: str = "http://127.0.0.1:8080"
    listen_addr: str = "127.0.0.1:8080"
    metrics_listen_addr: str = "127.0.0.1:9090"
    unix_socket: str = "pyheadscale.sock"
    unix_socket_permission: str = "0770"
    data_dir: str = ""
    noise: NoiseConfig = NoiseConfig()
    prefixes: PrefixesConfig = PrefixesConfig()
    derp: DerpConfig = DerpConfig()
    database: DatabaseConfig = DatabaseConfig()
    dns: DNSConfig = DNSConfig()
    policy: PolicyConfig = PolicyConfig()
    log: LogConfig = LogConfig()
    node: NodeConfig = NodeConfig()
    oidc: OIDCConfig = OIDCConfig()
    ephemeral_node_inactivity_timeout: timedelta | None = None
    # pyheadscale's own: the audit log's JSON lines (relative to the data directory); "" keeps it in memory.
    audit_log: str = "audit.log"
    taildrop: TaildropConfig = TaildropConfig()
    auto_update: AutoUpdateConfig = AutoUpdateConfig()
    logtail: LogTailConfig = LogTailConfig()
    cli: CLIConfig = CLIConfig()
    # TLS on listen_addr: certificate files, or a certificate from an ACME CA (not both).
    tls_cert_path: str = ""
    tls_key_path: str = ""
    tls_letsencrypt_hostname: str = ""
    tls_letsencrypt_cache_dir: str = "/var/www/.cache"
    tls_letsencrypt_challenge_type: str = "HTTP-01"
    tls_letsencrypt_listen: str = ":http"
    acme_url: str = ""
    acme_email: str = ""
    limits: LimitsConfig = LimitsConfig()
    # The remote gRPC API; served only with TLS or with grpc_allow_insecure, as in Headscale.
    grpc_listen_addr: str = ":50443"
    grpc_allow_insecure: bool = False

    @field_validator("server_url")
    @classmethod
    def _server_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL with a host")
        return value.rstrip("/")

    @field_validator("listen_addr", "metrics_listen_addr")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value:
            _host_port(value)
        return value

    @field_validator("ephemeral_node_inactivity_timeout", mode="before")
    @classmethod
    def _ephemeral(cls, value: Any) -> timedelta | None:
        return None if value is None else parse_duration(value)

    @field_validator("tls_letsencrypt_challenge_type")
    @classmethod
    def _challenge(cls, value: str) -> str:
        if value not in CHALLENGE_TYPES:
            raise ValueError(f"{value!r} is not supported: use {' or '.join(CHALLENGE_TYPES)}")
        return value

    @model_validator(mode="after")
    def _tls(self) -> Config:
        if self.tls_letsencrypt_hostname and (self.tls_cert_path or self.tls_key_path):
            raise ValueError("set either tls_letsencrypt_hostname or tls_cert_path/tls_key_path, not both")
        if bool(self.tls_cert_path) != bool(self.tls_key_path):
            missing = "tls_key_path" if self.tls_cert_path else "tls_cert_path"
            raise ValueError(
                f"{missing} is required with {'tls_cert_path' if self.tls_cert_path else 'tls_key_path'}"
            )
        return self

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert_path or self.tls_letsencrypt_hostname)

    @property
    def ephemeral_inactivity_timeout(self) -> timedelta:
        """node.ephemeral.inactivity_timeout when the file sets it, else the deprecated top-level key, else
        the default: the order Headscale reads them in."""
        if "inactivity_timeout" in self.node.ephemeral.model_fields_set:
            return self.node.ephemeral.inactivity_timeout
        return self.ephemeral_node_inactivity_timeout or self.node.ephemeral.inactivity_timeout

    @property
    def listen(self) -> tuple[str, int]:
        return _host_port(self.listen_addr)

    @property
    def metrics_listen(self) -> tuple[str, int] | None:
        return _host_port(self.metrics_listen_addr) if self.metrics_listen_addr else None

    @property
    def base_domain(self) -> str:
        return self.dns.base_domain

    def path(self, value: str) -> Path:
        """Resolve a configured path: absolute as given, relative to the data directory otherwise."""
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else Path(self.data_dir) / candidate


def default_data_dir() -> Path:
    env = os.environ.get("PYHEADSCALE_DATA_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    return Path(base).expanduser() / "pyheadscale"


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"] if p != "global_") or "(top level)"
        key = key.replace("global_", "global")
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "literal_error":
            message = f"{err.get('input')!r} is not allowed: {message.lower()}"
        lines.append(f"{key}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def build_config(
    raw: dict[str, Any],
    *,
    data_dir: Path | None = None,
    embedded: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate a parsed config mapping, with HEADSCALE_<KEY> variables from `environ` applied over it.

    `embedded` switches on the one-command defaults (DERP relay on). Keys Headscale removed are refused as
    Headscale refuses them; deprecated and unknown keys are logged by their dotted name.
    """
    if not isinstance(raw, dict):
        raise ConfigError("invalid configuration: the file must hold a YAML mapping of keys")
    try:
        merged, from_env = config_keys.apply_environment(Config, raw, environ or {})
    except ValueError as exc:
        raise ConfigError(f"invalid configuration:\n  {exc}") from None
    for key in from_env:
        log.info("config: %s set from the environment (%s)", key, config_keys.env_name(key))
    report = config_keys.check_keys(Config, merged)
    if report.fatal:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(report.fatal))
    for warning in report.warnings:
        log.warning("config: %s", warning)
    if embedded:
        merged.setdefault("derp", {"server": {"enabled": True, "stun_listen_addr": "127.0.0.1:3478"}})
    if "data_dir" in from_env:  # HEADSCALE_DATA_DIR wins over the file's directory, like any key
        data_dir = None
    merged["data_dir"] = str(data_dir or merged.get("data_dir") or default_data_dir())
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


# libyaml's loader when PyYAML has it: it caps nesting depth, where the pure-Python one recurses without
# limit and takes quadratic time on deeply nested flow collections.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(data: bytes) -> Any:
    """A YAML document from a file's bytes; ValueError saying what is wrong with it."""
    try:
        return yaml.load(data.decode("utf-8"), Loader=_YAML_LOADER)  # a safe loader, C or Python
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ValueError(f"not valid YAML: {exc}") from None


def load_config(path: str | os.PathLike[str] | None = None) -> tuple[Config, Path | None]:
    """Load the configuration file (searching Headscale's locations when none is given).

    Returns the validated config and the file it came from (None when running on embedded defaults).
    A file named by `path` or by HEADSCALE_CONFIG must exist: only the search is allowed to find nothing.
    HEADSCALE_<KEY> environment variables override the file's keys, as in Headscale.
    """
    named, origin = (str(path), "-c/--config") if path else (None, "")
    if named is None:
        for variable in ("HEADSCALE_CONFIG", "PYHEADSCALE_CONFIG"):
            if os.environ.get(variable):
                named, origin = os.environ[variable], variable
                break
    candidates = [Path(named)] if named else [Path(p).expanduser() for p in CONFIG_SEARCH_PATHS]
    for candidate in candidates:
        if candidate.is_file():
            try:
                raw = parse_yaml(candidate.read_bytes()) or {}
            except ValueError as exc:
                raise ConfigError(f"{candidate}: {exc}") from None
            except OSError as exc:
                raise ConfigError(f"{candidate}: cannot read the config file: {exc.strerror}") from None
            data_dir = Path(str(raw["data_dir"])) if isinstance(raw, dict) and raw.get("data_dir") else None
            config = build_config(raw, data_dir=data_dir or candidate.resolve().parent, environ=os.environ)
            return config, candidate
        if named:
            raise ConfigError(f"config file {candidate} (from {origin}) does not exist")
    return build_config({}, embedded=True, environ=os.environ), None
