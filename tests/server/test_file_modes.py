"""The server's files are private to its user whatever the umask: data dir 0700, database and logs 0600,
and the unix socket never exists with looser permissions than unix_socket_permission."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyheadscale import private_files
from pyheadscale.app import Server
from pyheadscale.config import build_config
from tests.ports import free_port


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


async def test_data_dir_database_and_logs_are_private_under_umask_022(
    tmp_path: Path, open_umask: None
) -> None:
    data_dir = tmp_path / "fresh" / "data"
    socket_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"phs-modes-{os.getpid()}"
    port = free_port()
    raw = {
        "server_url": f"http://127.0.0.1:{port}",
        "listen_addr": f"127.0.0.1:{port}",
        "metrics_listen_addr": "",
        "unix_socket": str(socket_dir / "s.sock"),
        "unix_socket_permission": "0770",
        "derp": {"server": {"enabled": False}},
    }
    server = Server(build_config(raw, data_dir=data_dir))
    await server.start()
    try:
        store = server.store
        assert store is not None
        await store.create_user("alice")  # something in the database and the audit log
        assert mode(data_dir) == 0o700
        assert mode(data_dir / "db.sqlite") == 0o600
        assert mode(data_dir / "audit.log") == 0o600
        assert mode(data_dir / "noise_private.key") == 0o600
        for sidecar in ("db.sqlite-wal", "db.sqlite-shm"):
            if (data_dir / sidecar).exists():
                assert mode(data_dir / sidecar) == 0o600, sidecar
        assert mode(socket_dir / "s.sock") == 0o770
    finally:
        await server.stop()
        (socket_dir / "s.sock").unlink(missing_ok=True)
        socket_dir.rmdir()


def test_existing_world_readable_database_is_tightened(tmp_path: Path, open_umask: None) -> None:
    database = tmp_path / "db.sqlite"
    database.write_bytes(b"")
    os.chmod(database, 0o644)
    private_files.ensure_private_file(database)
    assert mode(database) == 0o600


def test_socket_is_bound_under_a_restrictive_umask(
    tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At bind time (before chmod) the socket file is already 0600: nobody else can connect in between."""
    seen: list[int] = []
    real_bind = socket.socket.bind

    def bind(self: socket.socket, address: str) -> None:
        real_bind(self, address)
        seen.append(mode(Path(address)))

    monkeypatch.setattr(socket.socket, "bind", bind)
    sock = private_files.bind_unix_socket(tmp_path / "api.sock", 0o770)
    sock.close()
    assert seen == [0o600]
    assert mode(tmp_path / "api.sock") == 0o770
    assert os.umask(0o022) == 0o022, "the process umask is restored after binding"
