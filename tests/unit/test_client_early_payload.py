"""Our ControlClient reads a server's early payload however the server split it into Noise frames."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Awaitable, Callable

import pytest

from pyheadscale.client.control import ControlClientError, read_early_payload
from pyheadscale.control.ts2021 import EARLY_PAYLOAD_MAGIC


def _reader(frames: list[bytes]) -> Callable[[], Awaitable[bytes]]:
    queue = list(frames)

    async def read() -> bytes:
        return queue.pop(0) if queue else b""

    return read


BODY = json.dumps({"nodeKeyChallenge": "chalpub:" + "ab" * 32}).encode()


@pytest.mark.parametrize(
    "frames",
    [
        [EARLY_PAYLOAD_MAGIC + struct.pack(">I", len(BODY)) + BODY + b"h2"],  # pyheadscale: one write
        [EARLY_PAYLOAD_MAGIC, struct.pack(">I", len(BODY)), BODY, b"h2"],  # Headscale: one write per part
        [
            EARLY_PAYLOAD_MAGIC[:3],
            EARLY_PAYLOAD_MAGIC[3:] + struct.pack(">I", len(BODY))[:2],
            struct.pack(">I", len(BODY))[2:] + BODY[:10],
            BODY[10:] + b"h2",
        ],
    ],
)
def test_early_payload_split_anywhere(frames: list[bytes]) -> None:
    payload, rest = asyncio.run(read_early_payload(_reader(frames)))
    assert payload == json.loads(BODY)
    assert rest in (b"", b"h2")


def test_early_payload_rejects_missing_magic_and_oversize() -> None:
    with pytest.raises(ControlClientError, match="no early payload"):
        asyncio.run(read_early_payload(_reader([b"\x00\x00\x00\x00\x00\x00\x00\x00\x01"])))
    with pytest.raises(ControlClientError, match="over"):
        asyncio.run(read_early_payload(_reader([EARLY_PAYLOAD_MAGIC + struct.pack(">I", 2**31)])))
    with pytest.raises(ControlClientError, match="closed"):
        asyncio.run(read_early_payload(_reader([EARLY_PAYLOAD_MAGIC])))
