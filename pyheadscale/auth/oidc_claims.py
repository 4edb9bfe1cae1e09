"""What an OpenID login says about the person, and whether the configuration lets that person in.

The claims come from the validated ID token, completed by the provider's userinfo answer (many providers put
only `sub` in the ID token of a code flow). Authorization follows Headscale's rules: `allowed_groups` is
always checked; `allowed_domains` and `allowed_users` compare the email address, which counts only when the
provider says it is verified or `email_verified_required` is off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

from pyheadscale.config import OIDCConfig

# Headscale's user-name rule (at least two characters, a letter first, then letters, digits, - . _ and one @),
# intersected with the store's (at most 63 characters, ASCII).
_USERNAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]*(@[A-Za-z0-9._-]*)?")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _flexible_bool(value: Any) -> bool:
    """Some providers send email_verified as the string "true"; Headscale accepts both."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


# The last second a datetime can hold (9999-12-31T23:59:59Z): later "expiry" claims are not a time at all.
_MAX_TIMESTAMP = 253_402_300_799


def _timestamp(value: Any) -> int | None:
    """A NumericDate claim in whole seconds; None when it is not one (infinite, out of range)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= _MAX_TIMESTAMP:
        return None
    return int(value)


def _string_list(value: Any) -> list[str]:
    """A groups claim may be a list or, from some providers, one space- or comma-separated string."""
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str):
        return [g for g in re.split(r"[,\s]+", value) if g]
    return []


@dataclass(frozen=True, slots=True)
class Claims:
    iss: str
    sub: str
    name: str = ""
    email: str = ""
    email_verified: bool = False
    picture: str = ""
    preferred_username: str = ""
    groups: list[str] = field(default_factory=list)
    exp: int | None = None

    @classmethod
    def from_tokens(cls, id_token: dict[str, Any], userinfo: dict[str, Any] | None) -> Claims:
        """Claims of the ID token, with the userinfo answer's values taking precedence where it has them."""
        merged = {**id_token, **{k: v for k, v in (userinfo or {}).items() if v not in (None, "")}}
        return cls(
            iss=str(id_token["iss"]),
            sub=str(id_token["sub"]),
            name=str(merged.get("name") or ""),
            email=str(merged.get("email") or "").strip(),
            email_verified=_flexible_bool(merged.get("email_verified")),
            picture=str(merged.get("picture") or ""),
            preferred_username=str(merged.get("preferred_username") or ""),
            groups=_string_list(merged.get("groups")),
            exp=_timestamp(id_token.get("exp")),
        )

    @property
    def identifier(self) -> str:
        """The user's identity across logins: issuer and subject joined by a slash, as Headscale keys it."""
        return f"{self.iss.rstrip('/')}/{self.sub.lstrip('/')}"

    def trusted_email(self, email_verified_required: bool) -> str:
        """The email address if it may be relied on (verified, or verification not required) and valid."""
        if email_verified_required and not self.email_verified:
            return ""
        _, address = parseaddr(self.email)
        return address if address == self.email and _EMAIL.fullmatch(address) else ""


def refusal(config: OIDCConfig, claims: Claims) -> str | None:
    """Why this person may not log in under the configuration, or None when they may."""
    if config.allowed_groups and not set(config.allowed_groups) & set(claims.groups):
        return "you are not a member of any group allowed to log in"
    checks_email = bool(config.allowed_domains or config.allowed_users)
    if not checks_email:
        return None
    if config.email_verified_required and not claims.email_verified:
        return "your identity provider has not verified your email address"
    email = claims.email.lower()
    if config.allowed_domains:
        domain = email.rpartition("@")[2] if "@" in email else ""
        if domain not in config.allowed_domains:
            return f"the email domain of {claims.email or '(no email)'} is not allowed to log in"
    if config.allowed_users and email not in config.allowed_users:
        return f"{claims.email or '(no email)'} is not among the users allowed to log in"
    return None


def username_candidates(claims: Claims, email_verified_required: bool) -> list[str]:
    """Names this person could have in pyheadscale, the preferred first; the caller takes the first free one.

    Headscale takes `preferred_username` when it is a valid user name. An email-shaped one is taken only when
    it is the person's own trusted address, so no one can sign up as somebody else's address; then come the
    trusted email address and names made from the subject, which are never empty.
    """
    email = claims.trusted_email(email_verified_required)
    preferred = claims.preferred_username
    if "@" in preferred.rstrip("@") and preferred != email:
        preferred = ""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", claims.sub)[:52]
    candidates = [preferred, email, f"oidc-{claims.sub}", f"oidc-{cleaned}"]
    valid = [c for c in candidates if 2 <= len(c) <= 63 and _USERNAME.fullmatch(c)]
    valid += [f"oidc-{cleaned}-{n}" for n in range(2, 10)]
    return list(dict.fromkeys(valid))
