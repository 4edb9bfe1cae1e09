"""A burst of connections arriving while the server is busy waits in the kernel's queue, rather than having
its SYNs dropped (each drop costs the client a retransmission, 1 s or more)."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pyheadscale.listener import LISTEN_BACKLOG
from tests.live_server import LiveServer

BURST = 600
SOMAXCONN = int(Path("/proc/sys/net/core/somaxconn").read_text())


def connect_burst(port: int) -> int:
    """How many of BURST connections complete their TCP handshake at once (up to the first that fails)."""
    opened: list[socket.socket] = []
    try:
        for _ in range(BURST):
            sock = socket.socket()
            opened.append(sock)
            sock.settimeout(0.5)
            try:
                sock.connect(("127.0.0.1", port))
            except OSError:
                break
        else:
            return BURST
        return len(opened) - 1
    finally:
        for sock in opened:
            sock.close()


async def test_a_connection_burst_waits_in_the_listen_queue_while_the_server_is_busy(
    live: LiveServer,
) -> None:
    assert LISTEN_BACKLOG >= BURST
    if SOMAXCONN < BURST:
        pytest.skip(f"net.core.somaxconn is {SOMAXCONN}: the kernel caps every listen queue below {BURST}")
    with ThreadPoolExecutor(1) as pool:
        # Waiting here blocks the server's event loop: nothing is accepted while the burst arrives.
        connected = pool.submit(connect_burst, live.port).result(timeout=120)
    assert connected == BURST
