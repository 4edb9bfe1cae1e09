"""A throwaway PostgreSQL server (initdb into a temp dir, listening on 127.0.0.1 only).

Used by the `postgres` fixture (tests/db/conftest.py) and by drivers that need one inside their own network
namespace (a server started outside it would be unreachable from inside).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.ports import free_port

PASSWORD = "pyheadscale-test"


def pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def unavailable() -> str | None:
    """None when a server can be started here, else why not."""
    if pg_bin("initdb") is None or pg_bin("pg_ctl") is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed; .ci/run installs them"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: cannot start PostgreSQL as another user"
    return None


@contextlib.contextmanager
def throwaway_postgres(auth: str = "scram-sha-256") -> Iterator[dict[str, object]]:
    """Run a fresh server; yields its pyheadscale `database.postgres` settings (with `password`)."""
    reason = unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    assert initdb is not None and pg_ctl is not None
    as_user: list[str] = []
    # Not under pytest's tmp dir: as root that is private to root, and the server runs as `postgres`.
    data = Path(tempfile.mkdtemp(prefix="pyheadscale-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(data, "postgres")
    port = free_port()
    pwfile = data / "pw"
    pwfile.write_text(PASSWORD)
    if as_user:
        shutil.chown(pwfile, "postgres")
    init = [
        initdb,
        "-D",
        str(data / "db"),
        "-U",
        "headscale",
        "--pwfile",
        str(pwfile),
        "-A",
        auth,
        "--no-sync",
    ]
    subprocess.run(
        [*as_user, *init],
        check=True,
        capture_output=True,
    )
    options = f"-h 127.0.0.1 -p {port} -k {data} -F"
    subprocess.run(
        [
            *as_user,
            pg_ctl,
            "-D",
            str(data / "db"),
            "-l",
            str(data / "server.log"),
            "-w",
            "start",
            "-o",
            options,
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
            "password": PASSWORD,
        }
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data / "db"), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(data, ignore_errors=True)
