"""OIDC parameters that come from outside (pyheadscale/auth/oidc_*.py): ID tokens give claims or TokenInvalid,
and whatever claims a provider's token and userinfo answer carry become Claims, a refusal reason and user
names, never an exception. (The callback's query parameters are fuzzed against a live server in
test_fuzz_server.py.)"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from pyheadscale.auth.oidc_claims import Claims, refusal, username_candidates
from pyheadscale.auth.oidc_tokens import TokenInvalid, validate_id_token
from pyheadscale.config import OIDCConfig
from tests.fuzz import bounds
from tests.fuzz.seeds import json_values, mutated_bytes

KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})
KEYS = KeySet([KEY])
ISSUER, CLIENT_ID, NONCE = "https://id.example.com", "pyheadscale", "n-0123456789"


def signed(claims: dict[str, Any]) -> str:
    return jwt.encode({"alg": "RS256", "kid": "k1"}, claims, KEY)


def good_claims() -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "sub": "u1", "aud": CLIENT_ID, "exp": now + 600, "iat": now, "nonce": NONCE}


GOOD = signed(good_claims())
claim_values = st.dictionaries(
    st.sampled_from(["iss", "sub", "aud", "exp", "iat", "nbf", "nonce", "azp", "email", "groups", "name"]),
    json_values,
    max_size=6,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


tokens = st.one_of(
    mutated_bytes([GOOD.encode()]).map(lambda b: b.decode(errors="replace")),
    claim_values.map(lambda c: signed({**good_claims(), **c})),
    st.tuples(json_values, json_values).map(
        lambda p: f"{b64(json.dumps(p[0]).encode())}.{b64(json.dumps(p[1]).encode())}.{b64(b'sig')}"
    ),
    st.text(max_size=100),
)


@given(tokens)
@example(GOOD)
@example(signed({**good_claims(), "exp": 1e308}))
@example(signed({**good_claims(), "aud": [CLIENT_ID, {"x": 1}]}))
def test_id_token(token: str) -> None:
    bounds.call(
        "oidc.id_token",
        validate_id_token,
        token,
        KEYS,
        allowed=(TokenInvalid,),
        issuer=ISSUER,
        client_id=CLIENT_ID,
        nonce=NONCE,
        algorithms=["RS256"],
    )


def claims_of(id_token: dict[str, Any], userinfo: dict[str, Any] | None) -> None:
    claims = Claims.from_tokens(id_token, userinfo)
    config = OIDCConfig.model_validate(
        {
            "issuer": ISSUER,
            "client_id": CLIENT_ID,
            "client_secret": "s",
            "allowed_domains": ["example.com"],
            "allowed_groups": ["eng"],
        }
    )
    refusal(config, claims)
    assert username_candidates(claims, True), "there is always a name to fall back on"
    claims.trusted_email(False)


@given(claim_values, st.one_of(st.none(), claim_values))
@example({"exp": float("inf")}, None)
@example({"email": "a@b.c", "email_verified": "TRUE"}, {"groups": "eng ops,admins", "sub": "u1"})
def test_claims(extra: dict[str, Any], userinfo: dict[str, Any] | None) -> None:
    id_token = {**good_claims(), **extra, "iss": ISSUER, "sub": str(extra.get("sub", "u1"))}
    bounds.call("oidc.claims", claims_of, id_token, userinfo)
