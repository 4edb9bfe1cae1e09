"""Headscale's key space around the typed model: environment overrides, removed keys, unknown keys.

Headscale reads its configuration through viper with the environment prefix `HEADSCALE`, the key replacer
"." -> "_" and AutomaticEnv, so every key `a.b_c` can be set as `HEADSCALE_A_B_C`, and the environment wins
over the file. Values from the environment are strings: lists split on whitespace (as viper's string-slice
cast does) unless written as a YAML/JSON list, mappings are YAML/JSON, everything else is validated by the
model as if it came from the file.

Headscale refuses keys it removed (with a hint where there is a replacement) and warns about deprecated ones;
pyheadscale does the same for the same keys. Keys nobody knows are warned about by their dotted path.
"""

from __future__ import annotations

import logging
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """The configuration is invalid; the message lists each offending key."""


ENV_PREFIX = "HEADSCALE_"

# Keys Headscale reads that pyheadscale accepts without modelling them (they tune Go internals or features
# served by other parts of Headscale); present in a file, they are not "unknown".
ACCEPTED_UNMODELLED = frozenset(
    {
        "disable_check_updates",
        "trusted_proxies",
        "tuning",
        "database.debug",
        "database.gorm",
        "node.routes",
    }
)


@dataclass(frozen=True, slots=True)
class Removal:
    """A key Headscale no longer reads; `replacement` set means it is only fatal when that is not set."""

    key: str
    replacement: str = ""
    hint: str = ""
    fatal_even_with_replacement: bool = False

    def message(self) -> str:
        if self.hint:
            return f"{self.key!r} was removed from Headscale's configuration. {self.hint}"
        if self.replacement:
            return (
                f"{self.key!r} was removed from Headscale's configuration: use {self.replacement!r} instead"
            )
        return f"{self.key!r} was removed from Headscale's configuration; see its changelog"


REMOVED = (
    Removal("acl_policy_path", "policy.path"),
    Removal("dns_config.magic_dns", "dns.magic_dns"),
    Removal("dns_config.base_domain", "dns.base_domain"),
    Removal("dns_config.override_local_dns", "dns.override_local_dns"),
    Removal("dns_config.nameservers", "dns.nameservers.global"),
    Removal("dns_config.restricted_nameservers", "dns.nameservers.split"),
    Removal("dns_config.domains", "dns.search_domains"),
    Removal("dns_config.extra_records", "dns.extra_records"),
    Removal("dns.use_username_in_magic_dns", fatal_even_with_replacement=True),
    Removal("dns_config.use_username_in_magic_dns", fatal_even_with_replacement=True),
    Removal("oidc.strip_email_domain", fatal_even_with_replacement=True),
    Removal("oidc.map_legacy_users", fatal_even_with_replacement=True),
    Removal(
        "randomize_client_port",
        hint='It is a policy setting now: put "randomizeClientPort": true at the top level of the policy '
        "(policy.path or policy.mode: database), or grant the randomize-client-port capability to chosen "
        'nodes with a "nodeAttrs" entry.',
        fatal_even_with_replacement=True,
    ),
    Removal("oidc.expiry", "node.expiry", fatal_even_with_replacement=True),
)

# Deprecated but still read: a warning, the value is used (the new key wins when both are set).
DEPRECATED = {"ephemeral_node_inactivity_timeout": "node.ephemeral.inactivity_timeout"}


@dataclass(slots=True)
class KeyReport:
    """What `check_keys` found: fatal removed keys, and warnings for deprecated or unknown ones."""

    fatal: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def lookup(raw: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted key, None when any part is missing (a YAML null counts as not set)."""
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def is_set(raw: Mapping[str, Any], dotted: str) -> bool:
    return lookup(raw, dotted) is not None


def _field_name(name: str, info: Any) -> str:
    return str(info.alias or name)


def _section(annotation: Any) -> type[BaseModel] | None:
    """The model class a field holds, if it is a nested section."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def model_keys(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf key of a model as (dotted key, annotation), nested sections walked."""
    for name, info in model.model_fields.items():
        key = prefix + _field_name(name, info)
        section = _section(info.annotation)
        if section is not None:
            yield from model_keys(section, key + ".")
        else:
            yield key, info.annotation


def env_name(dotted: str) -> str:
    return ENV_PREFIX + dotted.replace(".", "_").upper()


def _is_kind(annotation: Any, kind: type) -> bool:
    """Whether `annotation` is (or, in a union, allows) `kind[...]`: list or dict."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_kind(arg, kind) for arg in typing.get_args(annotation))
    return origin is kind


def _env_value(dotted: str, text: str, annotation: Any) -> Any:
    name = env_name(dotted)
    if _is_kind(annotation, list) or _is_kind(annotation, dict):
        structured = text.lstrip().startswith(("[", "{"))
        if _is_kind(annotation, dict) or structured:
            try:
                return yaml.safe_load(text)
            except (yaml.YAMLError, RecursionError) as exc:
                raise ValueError(f"{name}: not valid YAML/JSON: {exc}") from None
        return text.split()
    return text


def _put(raw: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            return  # the file has a non-mapping here: validation reports it
        node = child
    node[parts[-1]] = value


def apply_environment(
    model: type[BaseModel], raw: dict[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """A copy of `raw` with every HEADSCALE_<KEY> variable applied over the file's value.

    Returns the new mapping and the dotted keys the environment set. Removed keys are read from the
    environment too, so that a HEADSCALE_RANDOMIZE_CLIENT_PORT is refused like the file key would be.
    """
    merged = _deep_copy(raw)
    applied: list[str] = []
    keys: dict[str, Any] = {r.key: Any for r in REMOVED} | dict.fromkeys(DEPRECATED, Any)
    keys |= dict(model_keys(model))
    for dotted, annotation in keys.items():
        text = environ.get(env_name(dotted))
        if not text:  # viper ignores an empty variable (AllowEmptyEnv is off in Headscale)
            continue
        _put(merged, dotted, _env_value(dotted, text, annotation))
        applied.append(dotted)
    return merged, applied


MAX_DEPTH = 32
"""Mappings nested deeper than this are refused: Headscale's keys go four levels down."""


def _deep_copy(raw: Mapping[str, Any], depth: int = 0) -> dict[str, Any]:
    if depth >= MAX_DEPTH:
        raise ValueError(f"mappings nested deeper than {MAX_DEPTH} levels")
    return {k: _deep_copy(v, depth + 1) if isinstance(v, Mapping) else v for k, v in raw.items()}


def check_keys(model: type[BaseModel], raw: Mapping[str, Any]) -> KeyReport:
    """Removed keys (fatal, as Headscale refuses them), deprecated keys and unknown keys (warnings)."""
    report = KeyReport()
    for removal in REMOVED:
        if not is_set(raw, removal.key):
            continue
        if removal.fatal_even_with_replacement or not is_set(raw, removal.replacement):
            report.fatal.append(removal.message())
        else:
            report.warnings.append(f"{removal.message()} (ignored: {removal.replacement!r} is set)")
    for old, new in DEPRECATED.items():
        if is_set(raw, old):
            report.warnings.append(f"{old!r} is deprecated: use {new!r} instead")
    removed = {r.key for r in REMOVED} | set(DEPRECATED)
    report.warnings += [
        f"unknown key {key!r} is ignored" for key in _unknown(model, raw, "", removed | ACCEPTED_UNMODELLED)
    ]
    return report


def _unknown(
    model: type[BaseModel] | None, raw: Mapping[str, Any], prefix: str, accepted: set[str]
) -> Iterator[str]:
    """Dotted keys in `raw` that neither the model nor the accepted/removed key lists know.

    An accepted key covers its whole subtree (e.g. `tuning`); a mapping that only leads to accepted keys
    (e.g. `dns_config`, parent of removed keys) is walked without a model.
    """
    fields = {_field_name(name, info): info for name, info in model.model_fields.items()} if model else {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if dotted in accepted:
            continue
        info = fields.get(str(key))
        section = _section(info.annotation) if info is not None else None
        leads_to_accepted = any(a.startswith(dotted + ".") for a in accepted)
        if info is not None and section is None:
            continue
        if (section is not None or leads_to_accepted) and isinstance(value, Mapping):
            yield from _unknown(section, value, dotted + ".", accepted)
        elif info is None:
            yield dotted
