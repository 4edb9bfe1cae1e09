"""A throwaway PostgreSQL server for the tests that prove the PostgreSQL path (initdb into a temp dir)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgres() -> Iterator[dict[str, object]]:
    """Connection settings (pyheadscale's `database.postgres` keys) of a fresh server on 127.0.0.1."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed; .ci/run installs them")
    as_user: list[str] = []
    # Not under pytest's tmp dir: as root that is private to root, and the server runs as `postgres`.
    data = Path(tempfile.mkdtemp(prefix="pyheadscale-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(data, "postgres")
    port = _free_port()
    password = "pyheadscale-test"
    pwfile = Path(data) / "pw"
    pwfile.write_text(password)
    if as_user:
        shutil.chown(pwfile, "postgres")
    subprocess.run(
        [
            *as_user,
            initdb,
            "-D",
            str(data / "db"),
            "-U",
            "headscale",
            "--pwfile",
            str(pwfile),
            "-A",
            "scram-sha-256",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    log = data / "server.log"
    subprocess.run(
        [
            *as_user,
            pg_ctl,
            "-D",
            str(data / "db"),
            "-l",
            str(log),
            "-w",
            "start",
            "-o",
            f"-h 127.0.0.1 -p {port} -k {data} -F",
        ],
        check=True,
        capture_output=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield {
            "host": "127.0.0.1",
            "port": port,
            "name": "postgres",
            "user": "headscale",
            "password": password,
        }
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data / "db"), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(data, ignore_errors=True)
