"""Round trips for every DERP frame layout."""

from __future__ import annotations

import pytest

from derp import frames
from derp.frames import FrameType, PeerGoneReason, PeerPresentFlags, ProtocolError

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))


def split(frame: bytes) -> tuple[int, bytes]:
    frame_type, length = frames.decode_header(frame[: frames.FRAME_HEADER_LEN])
    payload = frame[frames.FRAME_HEADER_LEN :]
    assert len(payload) == length
    return frame_type, payload


def test_magic_is_eight_bytes_of_derp_and_key_emoji() -> None:
    assert frames.MAGIC == bytes.fromhex("44455250f09f9491")


def test_header_round_trip_is_big_endian() -> None:
    header = frames.encode_header(FrameType.SEND_PACKET, 0x01020304)
    assert header == b"\x04\x01\x02\x03\x04"
    assert frames.decode_header(header) == (FrameType.SEND_PACKET, 0x01020304)


def test_header_of_wrong_length_is_rejected() -> None:
    with pytest.raises(ProtocolError):
        frames.decode_header(b"\x04\x00")


def test_send_packet_round_trip() -> None:
    frame_type, payload = split(frames.encode_send_packet(KEY_A, b"wireguard"))
    assert frame_type == FrameType.SEND_PACKET
    assert frames.decode_send_packet(payload) == (KEY_A, b"wireguard")


def test_send_packet_limits() -> None:
    with pytest.raises(ValueError):
        frames.encode_send_packet(KEY_A, bytes(frames.MAX_PACKET_SIZE + 1))
    with pytest.raises(ProtocolError):
        frames.decode_send_packet(b"short")
    with pytest.raises(ProtocolError):
        frames.decode_send_packet(KEY_A + bytes(frames.MAX_PACKET_SIZE + 1))
    _, payload = split(frames.encode_send_packet(KEY_A, bytes(frames.MAX_PACKET_SIZE)))
    assert len(frames.decode_send_packet(payload)[1]) == frames.MAX_PACKET_SIZE


def test_forward_packet_round_trip() -> None:
    frame_type, payload = split(frames.encode_forward_packet(KEY_A, KEY_B, b"data"))
    assert frame_type == FrameType.FORWARD_PACKET
    assert frames.decode_forward_packet(payload) == (KEY_A, KEY_B, b"data")
    with pytest.raises(ProtocolError):
        frames.decode_forward_packet(KEY_A)


def test_recv_packet_round_trip() -> None:
    frame_type, payload = split(frames.encode_recv_packet(KEY_B, b"pkt"))
    assert frames.decode_server_message(frame_type, payload) == frames.ReceivedPacket(KEY_B, b"pkt")


def test_keepalive_round_trip() -> None:
    frame_type, payload = split(frames.encode_keep_alive())
    assert payload == b""
    assert frames.decode_server_message(frame_type, payload) == frames.KeepAlive()


@pytest.mark.parametrize("preferred", [True, False])
def test_note_preferred_round_trip(preferred: bool) -> None:
    frame_type, payload = split(frames.encode_note_preferred(preferred))
    assert frame_type == FrameType.NOTE_PREFERRED
    assert frames.decode_note_preferred(payload) is preferred
    with pytest.raises(ProtocolError):
        frames.decode_note_preferred(b"\x01\x01")


@pytest.mark.parametrize("reason", [PeerGoneReason.DISCONNECTED, PeerGoneReason.NOT_HERE])
def test_peer_gone_round_trip(reason: PeerGoneReason) -> None:
    frame_type, payload = split(frames.encode_peer_gone(KEY_A, reason))
    assert len(payload) == 33
    assert frames.decode_server_message(frame_type, payload) == frames.PeerGone(KEY_A, reason)


@pytest.mark.parametrize(
    "endpoint", [("192.0.2.7", 41641), ("2001:db8::1", 443), None], ids=["ipv4", "ipv6", "none"]
)
def test_peer_present_round_trip(endpoint: tuple[str, int] | None) -> None:
    flags = PeerPresentFlags.IS_REGULAR | PeerPresentFlags.NOT_IDEAL
    frame_type, payload = split(frames.encode_peer_present(KEY_B, endpoint, flags))
    assert len(payload) == 32 + 16 + 2 + 1
    assert frames.decode_server_message(frame_type, payload) == frames.PeerPresent(KEY_B, endpoint, flags)


def test_peer_present_from_old_server_with_key_only() -> None:
    message = frames.decode_server_message(FrameType.PEER_PRESENT, KEY_A)
    assert message == frames.PeerPresent(KEY_A, None, PeerPresentFlags.NONE)


def test_ping_and_pong_round_trip() -> None:
    frame_type, payload = split(frames.encode_ping(b"01234567"))
    assert frames.decode_server_message(frame_type, payload) == frames.Ping(b"01234567")
    frame_type, payload = split(frames.encode_pong(b"abcdefgh"))
    assert frames.decode_server_message(frame_type, payload) == frames.Pong(b"abcdefgh")
    # Longer pings are tolerated (future use) up to a sane bound.
    assert frames.decode_ping(b"01234567" + b"x" * 100) == b"01234567"
    with pytest.raises(ProtocolError):
        frames.decode_ping(b"0123")
    with pytest.raises(ProtocolError):
        frames.decode_ping(bytes(frames.MAX_PING_LEN + 1))


def test_watch_conns_and_close_peer_round_trip() -> None:
    assert split(frames.encode_watch_conns()) == (FrameType.WATCH_CONNS, b"")
    frame_type, payload = split(frames.encode_close_peer(KEY_A))
    assert frame_type == FrameType.CLOSE_PEER
    assert frames.decode_close_peer(payload) == KEY_A


def test_health_round_trip() -> None:
    frame_type, payload = split(frames.encode_health("duplicate"))
    assert frames.decode_server_message(frame_type, payload) == frames.Health("duplicate")
    assert frames.decode_server_message(*split(frames.encode_health(""))) == frames.Health("")


def test_restarting_round_trip_in_milliseconds() -> None:
    frame_type, payload = split(frames.encode_restarting(1.5, 30))
    assert payload == (1500).to_bytes(4, "big") + (30000).to_bytes(4, "big")
    assert frames.decode_server_message(frame_type, payload) == frames.ServerRestarting(1.5, 30.0)


def test_unknown_frame_types_decode_to_none() -> None:
    assert frames.decode_server_message(0x7F, b"future") is None


def test_disco_detection() -> None:
    disco = frames.DISCO_MAGIC + bytes(32 + 24)
    assert frames.looks_like_disco(disco)
    assert not frames.looks_like_disco(disco[:-1])
    assert not frames.looks_like_disco(b"\x01" * 100)


STREAM_FRAMES = [
    frames.encode_send_packet(KEY_A, b"first"),
    frames.encode_keep_alive(),
    frames.encode_send_packet(KEY_B, bytes(range(256)) * 5),
    frames.encode_ping(b"12345678"),
    frames.encode_frame(0x7F, b"unknown type"),
]


def test_frame_reader_yields_the_same_frames_however_the_stream_is_cut() -> None:
    stream = b"".join(STREAM_FRAMES)
    expected = [split(frame) for frame in STREAM_FRAMES]
    for size in (1, 2, 3, 5, 7, 64, 1000, len(stream)):
        reader = frames.FrameReader(frames.MAX_FRAME_SIZE)
        got = [f for start in range(0, len(stream), size) for f in reader.feed(stream[start : start + size])]
        assert got == expected, size
        assert reader.buffered == 0


def test_frame_reader_parses_every_complete_frame_of_a_chunk_and_keeps_the_partial_one() -> None:
    stream = b"".join(STREAM_FRAMES)
    cut = len(stream) - 3
    reader = frames.FrameReader(frames.MAX_FRAME_SIZE)
    assert [f for f in reader.feed(stream[:cut])] == [split(frame) for frame in STREAM_FRAMES[:-1]]
    assert reader.buffered == len(STREAM_FRAMES[-1]) - 3
    assert list(reader.feed(stream[cut:])) == [split(STREAM_FRAMES[-1])]


def test_frame_reader_refuses_an_oversized_frame_from_its_header_alone() -> None:
    reader = frames.FrameReader(100)
    good = frames.encode_frame(FrameType.PING, b"12345678")
    oversized_header = frames.encode_header(FrameType.SEND_PACKET, 101)
    parsed = reader.feed(good + oversized_header)
    assert next(parsed) == split(good)  # what came before the bad frame is still delivered
    with pytest.raises(ProtocolError, match="101 bytes exceeds the limit of 100"):
        next(parsed)


def test_frame_reader_refuses_an_oversized_frame_whose_header_was_cut_across_reads() -> None:
    reader = frames.FrameReader(100)
    oversized_header = frames.encode_header(FrameType.SEND_PACKET, 101)
    assert list(reader.feed(oversized_header[:2])) == []
    with pytest.raises(ProtocolError, match="101 bytes exceeds the limit of 100"):
        list(reader.feed(oversized_header[2:] + bytes(50)))
    assert reader.buffered == 5  # the header only: none of the payload was taken in


def test_frame_reader_spans_point_into_the_chunk_except_for_a_frame_begun_earlier() -> None:
    first, second = frames.encode_ping(b"12345678"), frames.encode_send_packet(KEY_A, b"packet")
    reader = frames.FrameReader(frames.MAX_FRAME_SIZE)
    assert list(reader.feed_spans(first[:7])) == []
    chunk = first[7:] + second
    spans = list(reader.feed_spans(chunk))
    assert spans == [
        (FrameType.PING, first, 5, len(first)),
        (FrameType.SEND_PACKET, chunk, len(first) - 7 + 5, len(chunk)),
    ]
    assert spans[1][1] is chunk


def test_send_packets_rewritten_as_recv_packets_round_trip() -> None:
    packets = [b"", b"one", bytes(range(256)) * 5]
    run = bytearray(b"".join(frames.encode_send_packet(KEY_B, packet) for packet in packets))
    frames.rewrite_as_recv_packets(run, KEY_A)
    assert run == b"".join(frames.encode_recv_packet(KEY_A, packet) for packet in packets)
    decoded = [
        frames.decode_server_message(*frame)
        for frame in frames.FrameReader(frames.MAX_FRAME_SIZE).feed(bytes(run))
    ]
    assert decoded == [frames.ReceivedPacket(KEY_A, packet) for packet in packets]


def test_rewriting_refuses_what_is_not_whole_send_packets() -> None:
    with pytest.raises(ValueError, match="not a whole SendPacket frame at offset 0"):
        frames.rewrite_as_recv_packets(bytearray(frames.encode_ping(b"12345678")), KEY_A)
    cut = bytearray(frames.encode_send_packet(KEY_B, b"packet")[:-1])
    with pytest.raises(ValueError, match="not a whole SendPacket frame"):
        frames.rewrite_as_recv_packets(cut, KEY_A)
    with pytest.raises(ValueError, match="source key must be 32 bytes"):
        frames.rewrite_as_recv_packets(bytearray(frames.encode_send_packet(KEY_B, b"p")), b"short")
