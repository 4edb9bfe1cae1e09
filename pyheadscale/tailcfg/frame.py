"""Map frames: how MapResponses travel in a `/machine/map` response body.

Each MapResponse is one frame: a 4-byte little-endian length, then that many bytes of JSON, zstd-compressed
when the MapRequest asked for `Compress: "zstd"` (one zstd frame per message). A streaming response is a
sequence of frames; a one-shot map is one. The server encodes with `encode_frame`; our client and the tests
decode with `FrameDecoder`, which takes bytes as they arrive and hands back each message once it is whole.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from typing import Any, Literal

import zstandard

from pyheadscale.tailcfg.map_response import MapResponse

HEADER = struct.Struct("<I")
# A decoder refuses a frame, compressed or not, larger than this: a full map of 10,000 peers is ~10 MiB.
MAX_FRAME = 256 << 20
_ZSTD = zstandard.ZstdCompressor(level=1)

# The `fast` extra: a full map is O(peers) of JSON per recipient, and orjson writes it several times faster.
try:
    import orjson as _orjson
except ImportError:
    _orjson = None  # type: ignore[assignment]


# The lists whose entries may be SharedEntry.
_SHARED_LISTS: tuple[Literal["Peers", "PeersChanged", "PeersChangedPatch"], ...] = (
    "Peers",
    "PeersChanged",
    "PeersChangedPatch",
)


class FrameError(ValueError):
    """A frame that is too large, not zstd when it should be, or not a JSON object."""


class SharedEntry(dict[str, Any]):
    """A node or patch entry that many messages carry (a peer in every full map of a storm), encoded once.

    The first message holding it encodes it; every later one copies those bytes. An entry is read-only once
    it is in a message: whatever differs is a new entry.
    """

    __slots__ = ("_json",)

    def __init__(self, fields: Mapping[str, Any]) -> None:
        super().__init__(fields)
        self._json: Any = None

    def fragment(self) -> Any:
        """Its JSON as an orjson.Fragment, encoded on the first call."""
        if self._json is None:
            self._json = _orjson.Fragment(_orjson.dumps(self, option=_orjson.OPT_NON_STR_KEYS))
        return self._json


def encode_json(response: MapResponse) -> bytes:
    """A MapResponse's JSON, compact, as Go's encoder writes it."""
    if _orjson is not None:
        wire: Any = response
        for key in _SHARED_LISTS:
            nodes: list[Any] | None = response.get(key)
            if nodes:
                if wire is response:
                    wire = dict(response)
                wire[key] = [n.fragment() if type(n) is SharedEntry else n for n in nodes]
        # Integer keys (DERP region ids) become strings, as json.dumps makes them.
        return bytes(_orjson.dumps(wire, option=_orjson.OPT_NON_STR_KEYS))
    return json.dumps(response, separators=(",", ":")).encode()


def encode_frame(response: MapResponse, compress: bool) -> bytes:
    """One frame: the length, then the JSON (zstd-compressed when `compress`)."""
    body = encode_json(response)
    if compress:
        body = _ZSTD.compress(body)
    return HEADER.pack(len(body)) + body


def _loads(body: bytes) -> Any:
    return _orjson.loads(body) if _orjson is not None else json.loads(body)


class FrameDecoder:
    """The receiving side of a map stream, without I/O: `feed` it bytes, get back the messages completed.

    Messages are returned as decoded, unchecked: a dict is all that is known of what a server sent. A frame
    over `max_frame` bytes (before or after decompression) is refused before it is buffered whole.
    """

    def __init__(
        self,
        compressed: bool,
        *,
        max_frame: int = MAX_FRAME,
        parse: Callable[[bytes], Any] | None = None,
    ) -> None:
        self.compressed = compressed
        self.max_frame = max_frame
        # How a frame's JSON becomes a message; a simulator that needs less than every field can pass its own.
        self._parse = parse or _loads
        self._buffer = bytearray()
        self._zstd = zstandard.ZstdDecompressor()

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held; 0 at a frame boundary."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Take `data` (any split of the stream) and return the messages it completed, in order."""
        buffer = self._buffer
        buffer += data
        out: list[dict[str, Any]] = []
        start = 0
        while len(buffer) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, start)
            if size > self.max_frame:
                raise FrameError(f"map frame of {size} bytes is over the limit of {self.max_frame}")
            end = start + HEADER.size + size
            if len(buffer) < end:
                break
            out.append(self._message(bytes(buffer[start + HEADER.size : end])))
            start = end
        del buffer[:start]
        return out

    def _message(self, body: bytes) -> dict[str, Any]:
        if self.compressed:
            try:
                # The decompressor would allocate whatever size the frame header declares.
                declared = zstandard.frame_content_size(body)
                if declared > self.max_frame:
                    raise FrameError(f"map frame decompresses to {declared} bytes, over {self.max_frame}")
                body = self._zstd.decompress(body, max_output_size=self.max_frame)
            except zstandard.ZstdError as exc:
                raise FrameError(f"map frame is not zstd of at most {self.max_frame} bytes: {exc}") from None
        try:
            message = self._parse(body)
        except ValueError as exc:
            raise FrameError(f"map frame is not JSON: {exc}") from None
        if not isinstance(message, dict):
            raise FrameError(f"map frame holds a JSON {type(message).__name__}, not an object")
        return message


def decode_frames(data: bytes, compressed: bool) -> list[dict[str, Any]]:
    """Every message of a whole response body; FrameError when it ends inside a frame."""
    decoder = FrameDecoder(compressed)
    messages = decoder.feed(data)
    if decoder.buffered:
        raise FrameError(f"map response ends {decoder.buffered} bytes into an incomplete frame")
    return messages
