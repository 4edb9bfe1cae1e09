"""Validating an ID token (OpenID Connect Core 3.1.3.7): signature by the provider's keys, issuer, audience,
authorized party, expiry, issue time and the nonce this login sent.

Anything that does not check out raises `TokenInvalid` with a reason fit for the login page; the token itself
never appears in a message or a log.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

# Tolerance for clock skew between this server and the provider when checking exp, iat and nbf.
LEEWAY_SECONDS = 60

# Signature algorithms accepted when the provider does not list its own; never "none" or a symmetric one.
DEFAULT_ALGORITHMS = ("RS256",)
_ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"}
)


class TokenInvalid(Exception):
    """The ID token did not validate; the message says which check failed."""


class UnknownSigningKey(TokenInvalid):
    """The token names a key the provider's key set does not hold (the provider may have rotated its keys)."""


def signing_algorithms(advertised: Collection[str] | None) -> list[str]:
    """The algorithms to accept: the provider's advertised ones, restricted to asymmetric signatures."""
    chosen = [alg for alg in (advertised or DEFAULT_ALGORITHMS) if alg in _ASYMMETRIC]
    return chosen or list(DEFAULT_ALGORITHMS)


def _header_kid(token: str) -> str | None:
    try:
        header = jws.extract_compact(token.encode()).headers()
    except (JoseError, ValueError) as exc:
        raise TokenInvalid(f"the ID token is malformed ({exc.__class__.__name__})") from None
    kid = header.get("kid")
    return str(kid) if kid is not None else None


def validate_id_token(
    token: str, keys: KeySet, *, issuer: str, client_id: str, nonce: str, algorithms: Collection[str]
) -> dict[str, Any]:
    """The token's claims after every check of OpenID Connect Core 3.1.3.7 that applies to a code flow."""
    kid = _header_kid(token)
    if kid is not None and not any(k.kid == kid for k in keys.keys):
        raise UnknownSigningKey("the ID token is signed with a key the provider does not publish")
    try:
        decoded = jwt.decode(token, keys, algorithms=list(algorithms))
    except JoseError as exc:
        raise TokenInvalid(f"the ID token's signature does not verify ({exc.error})") from None
    claims = dict(decoded.claims)
    registry = jwt.JWTClaimsRegistry(
        leeway=LEEWAY_SECONDS,
        iss={"essential": True, "value": issuer},
        sub={"essential": True},
        aud={"essential": True, "value": client_id},
        exp={"essential": True},
        iat={"essential": True},
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        detail = exc.description or exc.error
        raise TokenInvalid(f"the ID token is not valid for this server ({detail})") from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    # With several audiences the authorized party must be named, and be us; a named one must be us anyway.
    if claims.get("azp", client_id if len(audiences) == 1 else None) != client_id:
        raise TokenInvalid("the ID token was issued to another party (azp)")
    if not secrets.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
        raise TokenInvalid("the ID token's nonce does not match this login")
    return claims
