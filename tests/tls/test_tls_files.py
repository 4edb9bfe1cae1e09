"""tls_cert_path/tls_key_path: listen_addr serves HTTPS, TS2021 works over it, bad files stop the start."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import aiohttp
import pytest

from pyheadscale.app import Server
from pyheadscale.cli.main import main
from pyheadscale.client.control import ControlClient
from pyheadscale.config import ConfigError, build_config
from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.live_server import StartLive
from tests.pki import ServerPKI, write_other_key
from tests.ports import free_port
from tests.tls.conftest import tls_raw_config


async def test_listen_addr_serves_https(start_tls_server: StartLive, trust: ssl.SSLContext) -> None:
    server = await start_tls_server()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.config.server_url}/health", ssl=trust) as response:
            assert response.status == 200
            assert (await response.json())["status"] == "pass"
        async with http.get(f"{server.config.server_url}/key?v=130", ssl=trust) as response:
            assert response.status == 200
            assert (await response.json())["publicKey"].startswith("mkey:")


async def test_alpn_picks_http11_when_a_client_offers_h2(
    start_tls_server: StartLive, trust: ssl.SSLContext
) -> None:
    server = await start_tls_server()
    host, port = server.config.listen
    trust.set_alpn_protocols(["h2", "http/1.1"])
    reader, writer = await asyncio.open_connection(host, port, ssl=trust, server_hostname="localhost")
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.selected_alpn_protocol() == "http/1.1"
        writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


async def test_cleartext_http_gets_no_answer_on_a_tls_listener(start_tls_server: StartLive) -> None:
    server = await start_tls_server()
    host, port = server.config.listen
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert not answer.startswith(b"HTTP/"), "a TLS listener must not answer cleartext HTTP"


async def test_ts2021_upgrade_and_registration_over_tls(
    start_tls_server: StartLive, trust: ssl.SSLContext
) -> None:
    server = await start_tls_server()
    store = server.store
    assert store is not None
    user = await store.create_user("alice")
    _, key = await store.create_preauth_key(user.id)
    client = ControlClient(server.config.server_url, MachinePrivate.generate(), tls=trust)
    await client.connect()
    try:
        answer = await client.register(NodePrivate.generate(), auth_key=key, hostname="laptop")
        assert answer["MachineAuthorized"]
    finally:
        await client.close()
    (node,) = store.nodes.values()
    assert node.hostname == "laptop"


async def test_untrusted_client_refuses_the_certificate(start_tls_server: StartLive) -> None:
    """The server really presents the configured certificate: a client without the test CA refuses it."""
    server = await start_tls_server()
    client = ControlClient(
        server.config.server_url, MachinePrivate.generate(), tls=ssl.create_default_context()
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        await client.connect()


def _garbage(path: Path) -> Path:
    path.write_text("not a PEM file\n")
    return path


@pytest.mark.parametrize(
    ("case", "key", "problem"),
    [
        ("missing cert", "tls_cert_path", "cannot read"),
        ("missing key", "tls_key_path", "cannot read"),
        ("key of another certificate", "tls_key_path", "is not the key of the certificate"),
        ("cert not PEM", "tls_cert_path", "does not hold a PEM certificate"),
        ("key not PEM", "tls_key_path", "does not hold a PEM private key"),
    ],
)
async def test_bad_certificate_files_stop_the_start_naming_the_key(
    case: str, key: str, problem: str, pki: ServerPKI, tmp_path: Path
) -> None:
    cert, private = pki.cert, pki.key
    if case == "missing cert":
        cert = tmp_path / "absent.pem"
    elif case == "missing key":
        private = tmp_path / "absent.key"
    elif case == "key of another certificate":
        private = write_other_key(tmp_path / "other.key")
    elif case == "cert not PEM":
        cert = _garbage(tmp_path / "garbage.pem")
    else:
        private = _garbage(tmp_path / "garbage.key")
    port = free_port()
    data_dir = tmp_path / "data"
    server = Server(build_config(tls_raw_config(data_dir, port, cert, private), data_dir=data_dir))
    with pytest.raises(ConfigError) as info:
        await server.start()
    assert str(info.value).startswith(f"{key}:"), str(info.value)
    assert problem in str(info.value)
    # Nothing was left listening in cleartext.
    with pytest.raises(OSError):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"tls_cert_path": "/c.pem"}, "tls_key_path is required with tls_cert_path"),
        ({"tls_key_path": "/k.pem"}, "tls_cert_path is required with tls_key_path"),
        (
            {"tls_cert_path": "/c.pem", "tls_key_path": "/k.pem", "tls_letsencrypt_hostname": "hs.example"},
            "set either tls_letsencrypt_hostname or tls_cert_path/tls_key_path, not both",
        ),
        ({"tls_letsencrypt_challenge_type": "DNS-01"}, "tls_letsencrypt_challenge_type: 'DNS-01'"),
    ],
)
def test_tls_key_combinations_are_checked(raw: dict[str, str], problem: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(raw, data_dir=tmp_path)
    assert problem in str(info.value)


def test_serve_exits_with_the_key_named(
    pki: ServerPKI, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # main() would set the process umask and point the root logger at this test's captured stderr.
    monkeypatch.setattr("os.umask", lambda _mask: 0o022)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    config = tmp_path / "config.yaml"
    port = free_port()
    config.write_text(
        f"server_url: https://127.0.0.1:{port}\nlisten_addr: 127.0.0.1:{port}\nmetrics_listen_addr: ''\n"
        f"unix_socket: ''\ntls_cert_path: {tmp_path / 'nope.pem'}\ntls_key_path: {pki.key}\n"
    )
    assert main(["-c", str(config), "serve"]) == 2
    assert "tls_cert_path: cannot read" in capsys.readouterr().err
    assert main(["-c", str(config), "configtest"]) == 2
    assert "tls_cert_path: cannot read" in capsys.readouterr().err
    config.write_text(config.read_text().replace(str(tmp_path / "nope.pem"), str(pki.cert)))
    assert main(["-c", str(config), "configtest"]) == 0


async def test_a_stalled_tls_handshake_is_closed_within_the_header_timeout(
    start_tls_server: StartLive,
) -> None:
    """Connection limits count a TLS connection once its handshake is done: the handshake has a deadline."""
    server = await start_tls_server(limits={"connections": {"header_timeout": "1s"}})
    host, port = server.config.listen
    reader, writer = await asyncio.open_connection(host, port)
    try:
        # Closed without a byte, well before asyncio's default handshake timeout of 60 s.
        assert await asyncio.wait_for(reader.read(), 30) == b""
    finally:
        writer.close()
