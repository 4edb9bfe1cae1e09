"""The server's TLS context from a certificate and key on disk, with errors that name the config key.

aiohttp's server speaks HTTP/1.1 only, so ALPN offers `http/1.1` alone: a client offering h2 falls back to
HTTP/1.1, which is also what the TS2021 upgrade (an HTTP/1.1 `Upgrade`) needs.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pyheadscale.config import ConfigError

ALPN_PROTOCOLS = ["http/1.1"]


def base_context() -> ssl.SSLContext:
    """A server context with our protocol floor and ALPN list, no certificate yet."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    return context


def _readable(key: str, path: Path) -> None:
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None


def context_from_files(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """Load the certificate chain and its key. Blocking file I/O: call it in a thread.

    Every failure is a ConfigError naming `tls_cert_path` or `tls_key_path` and what was wrong.
    """
    _readable("tls_cert_path", cert_path)
    _readable("tls_key_path", key_path)
    context = base_context()
    try:
        context.load_cert_chain(str(cert_path), str(key_path))
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in reason.upper():
            raise ConfigError(
                f"tls_key_path: {key_path} is not the key of the certificate in tls_cert_path"
            ) from None
        if "PEM" in reason.upper() or "NO_START_LINE" in reason.upper():
            # OpenSSL reports a bad certificate and a bad key alike; say which file did not parse.
            which = "tls_cert_path" if _pem_kind(cert_path) != "CERTIFICATE" else "tls_key_path"
            path = cert_path if which == "tls_cert_path" else key_path
            raise ConfigError(f"{which}: {path} does not hold a PEM {_expected(which)} ({reason})") from None
        raise ConfigError(
            f"tls_cert_path/tls_key_path: cannot load {cert_path} with {key_path}: {reason}"
        ) from None
    return context


def _expected(which: str) -> str:
    return "certificate" if which == "tls_cert_path" else "private key"


def _pem_kind(path: Path) -> str:
    """The label of the first PEM block in a file ("CERTIFICATE", "PRIVATE KEY", ...), or "" if none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    start = text.find("-----BEGIN ")
    if start < 0:
        return ""
    end = text.find("-----", start + 11)
    return text[start + 11 : end] if end > 0 else ""
