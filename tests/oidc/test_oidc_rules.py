"""The oidc config section and the claim rules (authorization, user names), which need no provider."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyheadscale.auth.oidc_claims import Claims, refusal, username_candidates
from pyheadscale.config import ConfigError, OIDCConfig, build_config

BASE: dict[str, object] = {"issuer": "https://id.example.com", "client_id": "hs", "client_secret": "s3cret"}


def oidc(**keys: object) -> OIDCConfig:
    return build_config({"oidc": BASE | keys}, data_dir=Path("/tmp/unused")).oidc


def config_error(section: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as info:
        build_config({"oidc": section}, data_dir=Path("/tmp/unused"))
    return str(info.value)


def test_defaults_and_activation() -> None:
    assert not build_config({}, data_dir=Path("/tmp/unused")).oidc.enabled
    cfg = oidc()
    assert cfg.enabled and cfg.scope == ["openid", "profile", "email"]
    assert cfg.email_verified_required and not cfg.use_expiry_from_token
    assert (cfg.pkce.enabled, cfg.pkce.method) == (False, "S256"), "Headscale's PKCE default: off"
    assert "s3cret" not in repr(cfg), "the client secret never shows in a repr or a log line"


def test_config_errors_name_the_key() -> None:
    assert "oidc.issuer: 'ftp://id' is not an http(s) URL" in config_error(BASE | {"issuer": "ftp://id"})
    assert "client_id is required" in config_error({"issuer": "https://id.example.com"})
    assert "mutually exclusive" in config_error(BASE | {"client_secret_path": "/run/secret"})
    assert "oidc.scope: must include 'openid'" in config_error(BASE | {"scope": ["email"]})
    clash = config_error(BASE | {"extra_params": {"nonce": "x"}})
    assert "oidc.extra_params: nonce is set by pyheadscale" in clash
    assert "oidc.pkce.method" in config_error(BASE | {"pkce": {"method": "S512"}})
    assert "'oidc.strip_email_domain' was removed" in config_error(BASE | {"strip_email_domain": True})
    assert "'oidc.expiry' was removed" in config_error(BASE | {"expiry": "30m"})


def test_client_secret_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "secret").write_text("from-file\n")
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path))
    cfg = build_config(
        {
            "oidc": {
                "issuer": "https://id.example.com",
                "client_id": "hs",
                "client_secret_path": "${SECRETS_DIR}/secret",
            }
        },
        data_dir=tmp_path,
    ).oidc
    assert cfg.read_client_secret() == "from-file"
    missing = build_config(
        {
            "oidc": {
                "issuer": "https://id.example.com",
                "client_id": "hs",
                "client_secret_path": str(tmp_path / "nope"),
            }
        },
        data_dir=tmp_path,
    ).oidc
    with pytest.raises(ConfigError, match=r"oidc\.client_secret_path: cannot read"):
        missing.read_client_secret()


def claims(**values: object) -> Claims:
    return Claims.from_tokens({"iss": "https://id.example.com", "sub": "u1", "exp": 1} | values, None)


def test_authorization_rules() -> None:
    verified = claims(email="Ann@Example.com", email_verified=True, groups=["eng"])
    assert refusal(oidc(), verified) is None
    assert refusal(oidc(allowed_domains=["example.com"]), verified) is None, "domains ignore case"
    assert "not allowed" in (refusal(oidc(allowed_domains=["other.org"]), verified) or "")
    assert refusal(oidc(allowed_users=["ann@example.com"]), verified) is None
    assert "not among the users" in (refusal(oidc(allowed_users=["bob@example.com"]), verified) or "")
    assert "not a member" in (refusal(oidc(allowed_groups=["ops"]), verified) or "")
    unverified = claims(email="ann@example.com", email_verified="false", groups="eng ops")
    assert unverified.groups == ["eng", "ops"], "a space-separated groups string is a list"
    assert refusal(oidc(allowed_groups=["ops"]), unverified) is None, "groups do not depend on the email"
    assert "not verified" in (refusal(oidc(allowed_domains=["example.com"]), unverified) or "")
    relaxed = oidc(allowed_domains=["example.com"], email_verified_required=False)
    assert refusal(relaxed, unverified) is None


def username_for(claims: Claims, email_verified_required: bool) -> str:
    return username_candidates(claims, email_verified_required)[0]


def test_user_names_and_identity() -> None:
    assert username_for(claims(preferred_username="ann"), True) == "ann"
    spaced = claims(preferred_username="Ann Smith", email="ann@example.com", email_verified=True)
    assert username_for(spaced, True) == "ann@example.com", "an invalid preferred_username: the email"
    assert username_for(claims(preferred_username="Ann Smith", email="ann@example.com"), True) == "oidc-u1", (
        "an unverified email is not used when verification is required"
    )
    assert username_for(claims(sub="weird/sub id"), True) == "oidc-weird-sub-id"
    assert username_candidates(claims(sub="u1"), True)[:3] == ["oidc-u1", "oidc-u1-2", "oidc-u1-3"], (
        "more names to fall back on when one is taken"
    )
    squatter = claims(preferred_username="ann@example.com", email="bob@example.com", email_verified=True)
    assert username_for(squatter, True) == "bob@example.com", "no name that is someone else's address"
    own = claims(preferred_username="ann@example.com", email="ann@example.com", email_verified=True)
    assert username_for(own, True) == "ann@example.com"
    assert claims().identifier == "https://id.example.com/u1"
    assert claims(email="ann@example.com").trusted_email(True) == ""
    assert claims(email="ann@example.com").trusted_email(False) == "ann@example.com"
