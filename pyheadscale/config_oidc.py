"""The `oidc` section of the configuration: login through an OpenID provider, with Headscale's keys."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from pyheadscale.config_keys import ConfigError
from pyheadscale.config_section import Section

log = logging.getLogger(__name__)


# Authorization-request parameters pyheadscale sets itself; oidc.extra_params may not override them.
_OIDC_PROTOCOL_PARAMS = frozenset(
    {
        "client_id",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
    }
)


class PKCEConfig(Section):
    # Off by default, as in Headscale.
    enabled: bool = False
    method: Literal["S256", "plain"] = "S256"


class OIDCConfig(Section):
    """Login through an OpenID provider; on when `issuer` is set, as Headscale activates it."""

    only_start_if_oidc_is_available: bool = True
    issuer: str = ""
    client_id: str = ""
    client_secret: SecretStr = SecretStr("")
    client_secret_path: str = ""
    scope: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    extra_params: dict[str, str] = Field(default_factory=dict)
    allowed_domains: list[str] = Field(default_factory=list)
    allowed_users: list[str] = Field(default_factory=list)
    allowed_groups: list[str] = Field(default_factory=list)
    email_verified_required: bool = True
    use_expiry_from_token: bool = False
    pkce: PKCEConfig = PKCEConfig()

    @property
    def enabled(self) -> bool:
        return bool(self.issuer)

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        parts = urlsplit(value)
        bad = parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment
        if value and bad:
            raise ValueError(f"{value!r} is not an http(s) URL (the provider's issuer identifier)")
        return value

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: list[str]) -> list[str]:
        if "openid" not in value:
            raise ValueError("must include 'openid'")
        return value

    @field_validator("extra_params")
    @classmethod
    def _extra(cls, value: dict[str, str]) -> dict[str, str]:
        clash = sorted(_OIDC_PROTOCOL_PARAMS & set(value))
        if clash:
            raise ValueError(f"{', '.join(clash)} is set by pyheadscale itself and cannot be overridden")
        return value

    @field_validator("allowed_domains", "allowed_users")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [v.strip().lower() for v in value]

    @model_validator(mode="after")
    def _client(self) -> OIDCConfig:
        if not self.issuer:
            return self
        if not self.client_id:
            raise ValueError("client_id is required when issuer is set")
        has_secret = bool(self.client_secret.get_secret_value())
        if has_secret and self.client_secret_path:
            raise ValueError("client_secret and client_secret_path are mutually exclusive")
        if not has_secret and not self.client_secret_path:
            raise ValueError("client_secret or client_secret_path is required when issuer is set")
        return self

    def read_client_secret(self) -> str:
        """The client secret, from the config or the file `client_secret_path` names (env variables expanded).

        Blocking file I/O: call it in a thread. Errors name the key.
        """
        if not self.client_secret_path:
            return self.client_secret.get_secret_value()
        path = Path(os.path.expandvars(self.client_secret_path)).expanduser()
        try:
            secret = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"oidc.client_secret_path: cannot read {path}: {exc.strerror}") from None
        if not secret:
            raise ConfigError(f"oidc.client_secret_path: {path} is empty")
        return secret
