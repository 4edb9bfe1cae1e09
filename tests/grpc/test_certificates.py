"""gRPC serves listen_addr's certificate and follows it when the files change (renewal, replacement)."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

from cryptography import x509

from pyheadscale.grpc.certificates import CertificateFiles, split_pem
from tests.grpc.headscale_cli_driver import self_signed
from tests.live_server import StartLive
from tests.ports import free_port


def _presented(address: str) -> str:
    host, _, port = address.rpartition(":")
    return ssl.get_server_certificate((host, int(port)), timeout=10)


async def test_a_replaced_certificate_is_served_to_new_connections(
    start_live: StartLive, tmp_path: Path
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    cert, key = self_signed(first)
    new_cert, new_key = self_signed(second)
    address = f"127.0.0.1:{free_port()}"
    await start_live(scheme="https", grpc_listen_addr=address, tls_cert_path=str(cert), tls_key_path=str(key))
    served = x509.load_pem_x509_certificate((await asyncio.to_thread(_presented, address)).encode())
    assert served == x509.load_pem_x509_certificate(cert.read_bytes())
    cert.write_bytes(new_cert.read_bytes())
    key.write_bytes(new_key.read_bytes())
    later = os.stat(cert).st_mtime_ns + 1_000_000_000
    os.utime(cert, ns=(later, later))
    os.utime(key, ns=(later, later))
    served = x509.load_pem_x509_certificate((await asyncio.to_thread(_presented, address)).encode())
    assert served == x509.load_pem_x509_certificate(new_cert.read_bytes())


def test_acme_certificate_stands_in_until_issued_then_is_picked_up(tmp_path: Path) -> None:
    combined = tmp_path / "hs.example.com"
    source = CertificateFiles(combined, None, fallback_hostname="hs.example.com")
    assert source.initial() is not None and source.changed() is None, "nothing issued yet"
    cert, key = self_signed(tmp_path)
    combined.write_bytes(key.read_bytes() + cert.read_bytes())
    assert source.changed() is not None and source.changed() is None, "picked up once"
    assert split_pem(combined.read_bytes()) == (key.read_bytes(), cert.read_bytes())
    combined.write_bytes(b"-----BEGIN CERTIFICATE-----\nbroken")
    later = os.stat(combined).st_mtime_ns + 1_000_000_000
    os.utime(combined, ns=(later, later))
    assert source.changed() is None, "a broken file keeps the pair in service"
