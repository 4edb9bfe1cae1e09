"""The server's files are its secrets: database, logs, keys and the local API socket are private to its user.

A umask of 022 would leave a fresh `db.sqlite` (API key hashes, node keys) and `audit.log` world-readable, so
each is created with its final mode instead of being chmod-ed afterwards, and the unix socket is bound under
a umask that lets nobody in before `unix_socket_permission` is applied. All of it is blocking: run it in a
thread.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dir(path: Path) -> None:
    """Create the data directory 0700. An existing one keeps its mode (it may be shared on purpose, e.g.
    /etc/headscale beside the config), but group or world access to it is logged."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=DIR_MODE, exist_ok=True)
        os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask; this is the mode we asked for
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("data directory %s has mode %04o: other users can list it (0700 recommended)", path, mode)


def ensure_private_file(path: Path) -> None:
    """Make sure `path` exists with mode 0600, creating it empty or tightening an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.info("tightening %s from mode %04o to 0600", path, mode)
            os.chmod(path, FILE_MODE)
        return
    os.close(fd)


def bind_unix_socket(path: Path, mode: int) -> socket.socket:
    """A listening-ready unix socket at `path`, created under umask 0177 and then given `mode`.

    The socket file never exists with looser permissions than the final ones, so no caller can connect
    in the window between bind and chmod.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(previous)
    os.chmod(path, mode)
    return sock
