"""The ACME pieces that need no CA: the autocert cache layout, the HTTP-01 listener, the TLS-ALPN-01
validation certificate, start-up errors, and refusing handshakes until a certificate exists."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import josepy
import pytest
from acme import challenges
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from pyheadscale.config import ConfigError, build_config
from pyheadscale.tls import acme_issuer
from pyheadscale.tls.acme_manager import ACMECertificates, listen_address
from tests.pki import make_pki
from tests.ports import free_port


def acme_config(tmp_path: Path, **extra: Any) -> Any:
    port = free_port()
    raw = {
        "server_url": f"https://hs.example.com:{port}",
        "listen_addr": f"127.0.0.1:{port}",
        "tls_letsencrypt_hostname": "hs.example.com",
        "tls_letsencrypt_cache_dir": str(tmp_path / "cache"),
        "tls_letsencrypt_listen": f"127.0.0.1:{free_port()}",
    } | extra
    return build_config(raw, data_dir=tmp_path)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (":http", (None, 80)),
        (":https", (None, 443)),
        ("0.0.0.0:8080", ("0.0.0.0", 8080)),
        ("[::]:80", ("::", 80)),
    ],
)
def test_listen_address_in_go_form(value: str, expected: tuple[str | None, int]) -> None:
    assert listen_address(value) == expected


def test_bad_listen_address_names_the_key() -> None:
    with pytest.raises(ConfigError, match="tls_letsencrypt_listen: 'nowhere'"):
        listen_address("nowhere")


def test_cached_certificate_in_autocert_layout_is_served_at_once(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", ["hs.example.com"])
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "hs.example.com").write_bytes(pki.key.read_bytes() + pki.cert.read_bytes())
    certificates = ACMECertificates(acme_config(tmp_path))
    certificates._load_cached()
    assert certificates.not_after is not None
    key, chain = acme_issuer.split_cached((cache / "hs.example.com").read_bytes())
    assert b"PRIVATE KEY" in key and chain.startswith(b"-----BEGIN CERTIFICATE-----")
    with pytest.raises(ValueError):
        acme_issuer.split_cached(pki.cert.read_bytes())


async def test_handshakes_are_refused_until_a_certificate_exists(tmp_path: Path) -> None:
    certificates = ACMECertificates(acme_config(tmp_path))
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=certificates.context)
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context()
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    try:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="hs.example.com")
    finally:
        server.close()
        await server.wait_closed()


async def test_http01_listener_serves_proofs_and_redirects_the_rest(tmp_path: Path) -> None:
    config = acme_config(tmp_path)
    certificates = ACMECertificates(config)
    await certificates.start()
    host, port = listen_address(config.tls_letsencrypt_listen)
    base = f"http://{host}:{port}"
    try:
        certificates.publish_http01("/.well-known/acme-challenge/tok", "tok.thumb")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/.well-known/acme-challenge/tok") as response:
                assert (response.status, await response.text()) == (200, "tok.thumb")
            async with http.get(f"{base}/.well-known/acme-challenge/other") as response:
                assert response.status == 404
            async with http.get(f"{base}/key?v=130", allow_redirects=False) as response:
                assert response.status == 308
                assert response.headers["Location"] == "https://hs.example.com/key?v=130"
        certificates.withdraw()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/.well-known/acme-challenge/tok") as response:
                assert response.status == 404
    finally:
        await certificates.close()


async def test_unusable_cache_dir_and_busy_listener_name_their_keys(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="tls_letsencrypt_cache_dir: cannot create"):
        await ACMECertificates(
            acme_config(tmp_path, tls_letsencrypt_cache_dir=str(blocker / "cache"))
        ).start()
    busy = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = busy.sockets[0].getsockname()[1]
    try:
        certificates = ACMECertificates(acme_config(tmp_path, tls_letsencrypt_listen=f"127.0.0.1:{port}"))
        with pytest.raises(ConfigError, match="tls_letsencrypt_listen: cannot listen"):
            await certificates.start()
        await certificates.close()
    finally:
        busy.close()
        await busy.wait_closed()


def test_tls_alpn01_validation_certificate() -> None:
    """RFC 8737: SAN = the domain; a critical acmeIdentifier extension holding SHA-256(key authorization)."""
    account = josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    challenge = challenges.Challenge.from_json({"type": "tls-alpn-01", "token": "a" * 43})
    assert isinstance(challenge, acme_issuer.TLSALPN01)
    response, (cert_pem, key_pem) = challenge.response_and_validation(account, domain="hs.example.com")
    assert response.to_partial_json() == {}, "the answer carries no fields; the certificate is the proof"
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["hs.example.com"]
    extension = cert.extensions.get_extension_for_oid(acme_issuer.ACME_IDENTIFIER_OID)
    digest = hashlib.sha256(challenge.key_authorization(account).encode()).digest()
    assert isinstance(extension.value, x509.UnrecognizedExtension)
    assert extension.critical and extension.value.value == b"\x04\x20" + digest
    assert b"PRIVATE KEY" in key_pem


async def test_http01_listener_is_held_to_the_header_timeout(tmp_path: Path) -> None:
    config = acme_config(tmp_path, limits={"connections": {"header_timeout": "1s"}})
    certificates = ACMECertificates(config)
    await certificates.start()
    host, port = listen_address(config.tls_letsencrypt_listen)
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /.well-known/acme-challenge/x HTTP/1.1\r\n")  # and never the rest of the head
        try:
            answer = await asyncio.wait_for(reader.read(), 30)
        finally:
            writer.close()
        assert not answer.startswith(b"HTTP/1.1 404"), "the request was never complete"
    finally:
        await certificates.close()
