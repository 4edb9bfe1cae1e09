"""Map frames (pyheadscale/tailcfg/frame.py): what the server encodes, our client and the tests decode."""

from __future__ import annotations

import json
import struct
from typing import cast

import pytest
import zstandard

from pyheadscale.tailcfg import frame
from pyheadscale.tailcfg.frame import FrameDecoder, FrameError, decode_frames, encode_frame
from pyheadscale.tailcfg.map_response import KEEPALIVE, MapResponse

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _messages() -> list[MapResponse]:
    return [
        {"KeepAlive": False, "Peers": [], "CollectServices": False, "Domain": "example.com"},
        {"PeersRemoved": [3, 4]},
        KEEPALIVE,
        {
            "PeersChangedPatch": [
                {"NodeID": 7, "DERPRegion": 1, "Endpoints": ["192.0.2.1:41641"], "Online": True}
            ]
        },
    ]


@pytest.mark.parametrize("compress", [True, False], ids=["zstd", "plain"])
def test_round_trip(compress: bool) -> None:
    message: MapResponse = {
        "KeepAlive": False,
        "Peers": [{"ID": i, "Name": f"n{i}"} for i in range(200)],  # type: ignore[typeddict-item]
        "CollectServices": False,
    }
    data = encode_frame(message, compress)
    assert decode_frames(data, compress) == [message]
    if compress:
        assert data[4:8] == ZSTD_MAGIC
    else:
        assert data[4:].startswith(b'{"KeepAlive":false,"Peers":[{"ID":0,"Name":"n0"},')
        assert data.endswith(b'"CollectServices":false}')


def test_length_is_little_endian_and_counts_the_body() -> None:
    data = encode_frame({"Domain": "y" * 300}, False)
    size = len(data) - 4
    assert size > 255
    assert data[:4] == bytes([size & 0xFF, size >> 8, 0, 0])
    compressed = encode_frame({"Domain": "y" * 3000}, True)
    assert struct.unpack("<I", compressed[:4])[0] == len(compressed) - 4


def test_keepalive() -> None:
    assert encode_frame(KEEPALIVE, False) == b"\x12\x00\x00\x00" + b'{"KeepAlive":true}'
    assert decode_frames(encode_frame(KEEPALIVE, True), True) == [{"KeepAlive": True}]


@pytest.mark.parametrize("compress", [True, False], ids=["zstd", "plain"])
def test_decoder_takes_any_split_of_a_stream(compress: bool) -> None:
    """A stream arrives in HTTP/2 DATA frames cut anywhere: fed byte by byte, the messages come out whole."""
    stream = b"".join(encode_frame(m, compress) for m in _messages())
    decoder = FrameDecoder(compress)
    got = []
    for i in range(len(stream)):
        got.extend(decoder.feed(stream[i : i + 1]))
    assert got == _messages()
    assert decoder.buffered == 0
    # and all at once
    assert FrameDecoder(compress).feed(stream) == _messages()


# DERP region ids as a caller may hold them: integers, which JSON can only write as strings.
INT_KEYS = cast(MapResponse, {"DERPMap": {"Regions": {900: {"RegionID": 900}}}})


def test_integer_keys_become_strings() -> None:
    """Integer map keys are written as strings, as Go's JSON writes them (and json.dumps does)."""
    data = encode_frame(INT_KEYS, False)
    assert b'"900":' in data
    assert decode_frames(data, False) == [{"DERPMap": {"Regions": {"900": {"RegionID": 900}}}}]


def test_without_orjson_the_same_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard-library path (no `fast` extra) writes the same compact JSON and reads it back."""
    messages = [*_messages(), INT_KEYS]
    fast = [encode_frame(m, False) for m in messages]
    monkeypatch.setattr(frame, "_orjson", None)
    slow = [encode_frame(m, False) for m in messages]
    assert slow == fast
    assert decode_frames(b"".join(slow), False) == json.loads(json.dumps(messages))


def test_oversized_frame_refused_before_it_is_buffered() -> None:
    decoder = FrameDecoder(False, max_frame=1000)
    with pytest.raises(FrameError, match="map frame of 1001 bytes is over the limit of 1000"):
        decoder.feed(struct.pack("<I", 1001) + b"{")


def test_decompression_bounded() -> None:
    """A small zstd frame that declares (or holds) more than the limit is refused, not inflated."""
    big = zstandard.ZstdCompressor().compress(b" " * 5000 + b"{}")
    with pytest.raises(FrameError, match="decompresses to 5002 bytes, over 1000"):
        FrameDecoder(True, max_frame=1000).feed(struct.pack("<I", len(big)) + big)
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(b" " * 5000 + b"{}")
    with pytest.raises(FrameError, match="not zstd of at most 1000 bytes"):
        FrameDecoder(True, max_frame=1000).feed(struct.pack("<I", len(unsized)) + unsized)


@pytest.mark.parametrize(
    "body, compressed, message",
    [
        (b"not zstd", True, "not zstd"),
        (b"{nope", False, "not JSON"),
        (b"[1, 2]", False, "holds a JSON list, not an object"),
    ],
)
def test_bad_frames_named(body: bytes, compressed: bool, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        FrameDecoder(compressed).feed(struct.pack("<I", len(body)) + body)


def test_truncated_response_refused() -> None:
    data = encode_frame(KEEPALIVE, False)
    with pytest.raises(FrameError, match="ends 5 bytes into an incomplete frame"):
        decode_frames(data + data[:5], False)


@pytest.mark.parametrize("fast", [True, False], ids=["orjson", "json"])
def test_shared_entries_encode_as_their_fields(monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    """A SharedEntry in Peers or PeersChanged is written exactly as the same fields in a plain dict would
    be, in every message that carries it, and is encoded once however many do."""
    if fast and frame._orjson is None:
        pytest.skip("orjson (the `fast` extra) is not installed")
    if not fast:
        monkeypatch.setattr(frame, "_orjson", None)
    fields = {"ID": 5, "Name": "n5.", "Hostinfo": {"OS": "linux"}, "Endpoints": ["192.0.2.1:41641"]}
    shared = frame.SharedEntry(fields)
    plain = {"ID": 6, "Name": "n6."}
    with_shared = cast(MapResponse, {"Peers": [shared, plain], "PeersChanged": [shared]})
    with_dicts = cast(MapResponse, {"Peers": [dict(fields), plain], "PeersChanged": [dict(fields)]})
    for compress in (False, True):
        data = encode_frame(with_shared, compress)
        assert data == encode_frame(with_dicts, compress)
        assert decode_frames(data, compress) == [json.loads(json.dumps(with_dicts))]
    if fast:
        first = shared.fragment()
        encode_frame(with_shared, False)
        assert shared.fragment() is first
    assert with_shared["Peers"][0] is shared  # the message itself is left as it was
