"""A TLS-terminating front on port 443 for the lab's control host, as operators put one before pyheadscale.

Why the lab needs one: a Tailscale client whose login server is `http://<non-private IP>:<port>` falls back
to Noise over HTTPS on port 443 whenever it redials control within two minutes of its previous dial
(controlhttp's forceNoise443 heuristic), and then dials *only* 443 until it has been quiet for two minutes.
The lab's addresses are documentation ranges, which Go does not count as private, so without a 443 listener
every reconnect (a network change, a logout) would leave the client cut off from control for minutes.

The front's certificate is for the control host's IP and signed by a throwaway CA that clients trust
through SSL_CERT_FILE (made by tests/pki.py); it forwards the bytes to pyheadscale's plain-HTTP listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError, ConnectionError, RuntimeError):
        writer.close()


async def start_tls_front(
    listen: str, port: int, target: tuple[str, int], cert: Path, key: Path
) -> asyncio.Server:
    """Accept TLS on listen:port and relay each connection's bytes to `target` (plain TCP)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))

    return await asyncio.start_server(relay, listen, port, ssl=context)
