"""Free loopback ports, for servers a test (or benchmark) is about to start."""

from __future__ import annotations

import socket


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A 127.0.0.1 port nothing listens on right now: TCP by default, UDP with `socket.SOCK_DGRAM`.

    The port is released before it is returned, so another process could take it first; on a test machine the
    kernel hands out ports round-robin, which makes that rare enough.
    """
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
