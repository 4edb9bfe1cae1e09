"""The gRPC listener's TLS certificate, from the same source as listen_addr's: tls_cert_path/tls_key_path, or
the ACME certificate (key and chain in one PEM in tls_letsencrypt_cache_dir).

gRPC loads certificates itself, so it is given dynamic credentials: every new connection asks whether the
files changed (a renewed ACME certificate, a replaced file) and picks up the new pair. Until an ACME
certificate is first issued a throwaway self-signed one stands in, so the listener can start at once.
"""

from __future__ import annotations

import re
from pathlib import Path

import grpc
from cryptography import x509

from pyheadscale.tls.self_signed import self_signed_pem

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----\s*", re.S)


def split_pem(pem: bytes) -> tuple[bytes, bytes]:
    """(private key, certificate chain) out of one PEM holding both."""
    key = b"".join(m[0] for m in _PEM_BLOCK.finditer(pem) if b"PRIVATE KEY" in m[1])
    chain = b"".join(m[0] for m in _PEM_BLOCK.finditer(pem) if m[1] == b"CERTIFICATE")
    if not key or not chain:
        raise ValueError("the PEM does not hold both a private key and a certificate")
    return key, chain


def placeholder(hostname: str) -> tuple[bytes, bytes]:
    """A self-signed (key, certificate) for `hostname`, valid for a day."""
    return self_signed_pem(hostname, [x509.DNSName(hostname)])


class CertificateFiles:
    """A certificate and key on disk (`key_path` None: both in `cert_path`), re-read when they change."""

    def __init__(
        self, cert_path: Path, key_path: Path | None, *, fallback_hostname: str | None = None
    ) -> None:
        self.cert_path = cert_path
        self.key_path = key_path
        self.fallback_hostname = fallback_hostname
        self._stamp: tuple[float, ...] | None = None

    def _current_stamp(self) -> tuple[float, ...] | None:
        try:
            paths = [self.cert_path] if self.key_path is None else [self.cert_path, self.key_path]
            return tuple(p.stat().st_mtime_ns for p in paths)
        except FileNotFoundError:
            return None

    def _read(self) -> tuple[bytes, bytes]:
        if self.key_path is None:
            return split_pem(self.cert_path.read_bytes())
        return self.key_path.read_bytes(), self.cert_path.read_bytes()

    def initial(self) -> grpc.ServerCertificateConfiguration:
        """What to serve now: the files, or (ACME, nothing issued yet) a self-signed stand-in."""
        stamp = self._current_stamp()
        if stamp is None and self.fallback_hostname is not None:
            key, chain = placeholder(self.fallback_hostname)
        else:
            key, chain = self._read()
            self._stamp = stamp
        return grpc.ssl_server_certificate_configuration([(key, chain)])

    def changed(self) -> grpc.ServerCertificateConfiguration | None:
        """The new pair when the files changed since last read (called by gRPC per new connection)."""
        stamp = self._current_stamp()
        if stamp is None or stamp == self._stamp:
            return None
        try:
            key, chain = self._read()
        except (OSError, ValueError):
            return None  # mid-write or broken: keep serving the pair we have
        self._stamp = stamp
        return grpc.ssl_server_certificate_configuration([(key, chain)])

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self.initial(), self.changed)
