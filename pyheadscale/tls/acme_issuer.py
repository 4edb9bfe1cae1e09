"""Getting a certificate from an ACME CA (Let's Encrypt, or Pebble in tests) with certbot's `acme` library.

The library speaks the protocol (account, order, authorizations, finalize) synchronously over `requests`, so
`issue` runs in a thread. We only provide what the server side of a challenge needs: for HTTP-01 the key
authorization served at `/.well-known/acme-challenge/<token>`, for TLS-ALPN-01 (RFC 8737; dropped from recent
`acme` releases, so its challenge type is registered here on the library's generic key-authorization classes)
the self-signed validation certificate presented to `acme-tls/1` handshakes.

The account key and certificates use Go's autocert cache layout (what Headscale keeps in
tls_letsencrypt_cache_dir), so a Headscale cache directory carries over: `acme_account+key` holds the account
key, and a file named after the host holds the certificate's key followed by its chain, all PEM.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import josepy
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pyheadscale.tls.self_signed import self_signed_pem

log = logging.getLogger(__name__)

LETSENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
ACCOUNT_KEY_FILE = "acme_account+key"
USER_AGENT = "pyheadscale"
ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # RFC 8737 id-pe-acmeIdentifier
ORDER_TIMEOUT = timedelta(minutes=3)


class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """The (empty) answer to a tls-alpn-01 challenge: the proof is the certificate we present."""

    typ = "tls-alpn-01"


class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """RFC 8737's tls-alpn-01 challenge; `validation` gives the certificate and key to present."""

    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key: josepy.JWK, **kwargs: Any) -> tuple[bytes, bytes]:
        domain = str(kwargs["domain"])
        digest = hashlib.sha256(self.key_authorization(account_key).encode()).digest()
        # The extension's value is the DER encoding of an OCTET STRING holding the digest.
        proof = x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, b"\x04\x20" + digest)
        key_pem, cert_pem = self_signed_pem(domain, [x509.DNSName(domain)], [(proof, True)])
        return cert_pem, key_pem


challenges.Challenge.register(TLSALPN01)
challenges.ChallengeResponse.register(TLSALPN01Response)


class Responder(Protocol):
    """Where a challenge's proof is published while the CA validates it (the server's listeners)."""

    def publish_http01(self, path: str, key_authorization: str) -> None: ...
    def publish_tls_alpn01(self, domain: str, cert_pem: bytes, key_pem: bytes) -> None: ...
    def withdraw(self) -> None: ...


@dataclass(frozen=True)
class Issued:
    """A certificate as autocert caches it: key PEM then chain PEM, with its validity end."""

    pem: bytes
    not_after: datetime


def new_ec_key_pem() -> bytes:
    """A P-256 key in the "EC PRIVATE KEY" PEM form autocert writes."""
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def not_after(chain_pem: bytes) -> datetime:
    return x509.load_pem_x509_certificate(chain_pem).not_valid_after_utc


def split_cached(pem: bytes) -> tuple[bytes, bytes]:
    """(key PEM, chain PEM) of an autocert cache entry; ValueError when either is missing."""
    text = pem.decode("ascii", errors="replace")
    start = text.find("-----BEGIN CERTIFICATE-----")
    if start < 0 or "PRIVATE KEY-----" not in text[:start]:
        raise ValueError("not a key followed by a certificate chain")
    return text[:start].encode(), text[start:].encode()


def _account_key(account_pem: bytes) -> josepy.JWKEC:
    key = serialization.load_pem_private_key(account_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the cached ACME account key is not an EC key")
    return josepy.JWKEC(key=key)


def _account(acme: client.ClientV2, email: str) -> None:
    if email:
        registration = messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True)
    else:
        registration = messages.NewRegistration.from_data(terms_of_service_agreed=True)
    try:
        acme.new_account(registration)
    except errors.ConflictError as exc:  # this key already has an account: use it
        acme.query_registration(messages.RegistrationResource(uri=exc.location, body=messages.Registration()))


def issue(
    *,
    directory_url: str,
    account_pem: bytes,
    email: str,
    hostname: str,
    challenge_type: str,
    responder: Responder,
) -> Issued:
    """Order a certificate for `hostname`, proving control with `challenge_type` ("HTTP-01" or
    "TLS-ALPN-01"). Blocking: run it in a thread. Raises `acme.errors.Error` (or OSError) on failure."""
    account_key = _account_key(account_pem)
    net = client.ClientNetwork(account_key, alg=josepy.ES256, user_agent=USER_AGENT)
    acme = client.ClientV2(client.ClientV2.get_directory(directory_url, net), net=net)
    _account(acme, email)
    key_pem = new_ec_key_pem()
    order = acme.new_order(crypto_util.make_csr(key_pem, [hostname]))
    wanted = {"HTTP-01": challenges.HTTP01, "TLS-ALPN-01": TLSALPN01}[challenge_type]
    try:
        for authorization in order.authorizations:
            if authorization.body.status == messages.STATUS_VALID:
                continue
            body = next((c for c in authorization.body.challenges if isinstance(c.chall, wanted)), None)
            if body is None:
                raise errors.Error(f"the CA offers no {challenge_type} challenge for {hostname}")
            if isinstance(body.chall, TLSALPN01):
                response, proof = body.chall.response_and_validation(account_key, domain=hostname)
                responder.publish_tls_alpn01(hostname, *proof)
            else:
                response, validation = body.chall.response_and_validation(account_key)
                responder.publish_http01(body.chall.path, validation)
            acme.answer_challenge(body, response)
        # The library compares its deadline with naive local time.
        finalized = acme.poll_and_finalize(order, deadline=datetime.now() + ORDER_TIMEOUT)
    finally:
        responder.withdraw()
    chain = finalized.fullchain_pem.encode()
    log.info("ACME: certificate for %s issued by %s", hostname, directory_url)
    return Issued(key_pem + chain, not_after(chain))
