"""Talking to the OpenID provider: discovery, its signing keys, the code-for-tokens exchange and userinfo.

All of it is asynchronous HTTP (aiohttp) with a bounded timeout, so a slow provider delays only the login that
waits on it. Tokens, codes and the client secret are sent to the provider and nowhere else: errors carry the
provider's error code and description, never the values.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from pyheadscale.auth.oidc_tokens import UnknownSigningKey, signing_algorithms, validate_id_token

log = logging.getLogger(__name__)

TIMEOUT = aiohttp.ClientTimeout(total=15)


class ProviderError(Exception):
    """The provider could not be reached or answered something unusable; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """The parts of the discovery document a code-flow login uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str
    algorithms: list[str]
    token_auth_methods: list[str]

    @classmethod
    def from_document(cls, doc: dict[str, Any], expected_issuer: str) -> ProviderMetadata:
        # OpenID Connect Discovery 4.3: the document must be about the issuer we asked for.
        issuer = str(doc.get("issuer") or "")
        if issuer.rstrip("/") != expected_issuer.rstrip("/"):
            raise ProviderError(
                f"the discovery document names issuer {issuer!r}, not the configured {expected_issuer!r}"
            )
        missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not doc.get(k)]
        if missing:
            raise ProviderError(f"the discovery document lacks {', '.join(missing)}")
        return cls(
            issuer=issuer,
            authorization_endpoint=str(doc["authorization_endpoint"]),
            token_endpoint=str(doc["token_endpoint"]),
            jwks_uri=str(doc["jwks_uri"]),
            userinfo_endpoint=str(doc.get("userinfo_endpoint") or ""),
            algorithms=signing_algorithms(doc.get("id_token_signing_alg_values_supported")),
            token_auth_methods=list(
                doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
            ),
        )


@dataclass(frozen=True, slots=True)
class TokenResponse:
    id_token: str
    access_token: str


class Provider:
    """One configured provider. Discovery must succeed before a login can start; a failure is retried."""

    def __init__(self, issuer: str, client_id: str, client_secret: str) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self._client_secret = client_secret
        self._session: aiohttp.ClientSession | None = None
        self._metadata: ProviderMetadata | None = None
        self._keys: KeySet | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Provider(issuer={self.issuer!r}, client_id={self.client_id!r})"

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=TIMEOUT)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def metadata(self) -> ProviderMetadata:
        """The discovery document (fetched once, and again after a failure), with the signing keys loaded."""
        async with self._lock:
            if self._metadata is None:
                url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
                metadata = ProviderMetadata.from_document(await self._get_json(url), self.issuer)
                self._keys = await self._fetch_keys(metadata.jwks_uri)
                self._metadata = metadata
                log.info("OIDC provider %s discovered", self.issuer)
            return self._metadata

    async def _get_json(self, url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            async with self._http().get(url, headers=headers) as response:
                if response.status != 200:
                    raise ProviderError(f"{url} answered HTTP {response.status}")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ProviderError(f"cannot fetch {url}: {exc.__class__.__name__}: {exc}") from None
        if not isinstance(body, dict):
            raise ProviderError(f"{url} did not answer a JSON object")
        return body

    async def _fetch_keys(self, jwks_uri: str) -> KeySet:
        document = await self._get_json(jwks_uri)
        try:
            return KeySet.import_key_set(document)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise ProviderError(f"the provider's key set at {jwks_uri} is unusable ({exc})") from None

    def authorization_url(self, metadata: ProviderMetadata, params: dict[str, str]) -> str:
        separator = "&" if "?" in metadata.authorization_endpoint else "?"
        return metadata.authorization_endpoint + separator + urlencode(params, quote_via=quote)

    async def exchange_code(
        self, code: str, *, redirect_uri: str, code_verifier: str | None
    ) -> TokenResponse:
        """Trade the authorization code for tokens (RFC 6749 4.1.3), authenticating as the client."""
        metadata = await self.metadata()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier:
            form["code_verifier"] = code_verifier
        headers = {"Accept": "application/json"}
        methods = metadata.token_auth_methods
        if "client_secret_basic" in methods or "client_secret_post" not in methods:
            # RFC 6749 2.3.1: the id and secret are form-encoded before they go into the Basic header.
            pair = f"{quote(self.client_id, safe='')}:{quote(self._client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form |= {"client_id": self.client_id, "client_secret": self._client_secret}
        try:
            async with self._http().post(metadata.token_endpoint, data=form, headers=headers) as response:
                body = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ProviderError(f"the token request failed: {exc.__class__.__name__}") from None
        if not isinstance(body, dict):
            raise ProviderError(f"the token endpoint answered HTTP {status} without a JSON object")
        if status != 200 or "error" in body:
            detail = body.get("error_description") or body.get("error") or f"HTTP {status}"
            raise ProviderError(f"the provider refused the login code: {detail}")
        if not body.get("id_token") or not body.get("access_token"):
            raise ProviderError("the provider's token response has no ID token (is 'openid' in oidc.scope?)")
        return TokenResponse(str(body["id_token"]), str(body["access_token"]))

    async def validate(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The ID token's validated claims; an unknown key id refreshes the key set once (key rotation)."""
        metadata = await self.metadata()

        def check(keys: KeySet) -> dict[str, Any]:
            return validate_id_token(
                id_token,
                keys,
                issuer=metadata.issuer,
                client_id=self.client_id,
                nonce=nonce,
                algorithms=metadata.algorithms,
            )

        assert self._keys is not None
        try:
            return check(self._keys)
        except UnknownSigningKey:
            self._keys = await self._fetch_keys(metadata.jwks_uri)
            return check(self._keys)

    async def userinfo(self, access_token: str, subject: str) -> dict[str, Any] | None:
        """The userinfo claims, or None when the provider has no userinfo endpoint.

        OpenID Connect Core 5.3.2: the answer must be about the ID token's subject, or it is not used.
        """
        metadata = await self.metadata()
        if not metadata.userinfo_endpoint:
            return None
        claims = await self._get_json(
            metadata.userinfo_endpoint,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        )
        if claims.get("sub") != subject:
            raise ProviderError("the provider's userinfo answer is about another subject")
        return claims
