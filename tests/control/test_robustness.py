"""Garbage on every listener gets a clean close or error, and the server keeps serving everyone else."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections import deque
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from pyheadscale.client.control import fetch_server_key
from pyheadscale.control import noise
from pyheadscale.tailkey import MachinePrivate, MachinePublic, NodePrivate
from tests.live_server import LiveServer, open_map


async def still_serving(live: LiveServer) -> None:
    """A fresh client registers and gets its map, and the server's other streams are unaffected."""
    node = await live.node("bystander")
    reader = open_map(node)
    try:
        full = await reader.next()
        assert full["Node"]["Key"] == node.node_key_text
    finally:
        await reader.close()


async def http_exchange(live: LiveServer, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def upgrade_request(
    live: LiveServer,
    header: str | None,
    upgrade: str | None = "tailscale-control-protocol",
    method: str = "POST",
) -> bytes:
    lines = [f"{method} /ts2021 HTTP/1.1", f"Host: 127.0.0.1:{live.port}", "Connection: upgrade"]
    if upgrade is not None:
        lines.append(f"Upgrade: {upgrade}")
    if header is not None:
        lines.append(f"X-Tailscale-Handshake: {header}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def valid_initiation(server_public: MachinePublic, version: int = 130) -> bytes:
    return noise.Initiator(MachinePrivate.generate(), server_public, version).initiation()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    "case",
    [
        "no-upgrade",
        "wrong-upgrade",
        "no-header",
        "bad-base64",
        "short",
        "long",
        "wrong-type",
        "wrong-length",
        "random-bytes",
        "wrong-server-key",
    ],
)
async def test_bad_handshake_gets_400(live: LiveServer, case: str) -> None:
    server_public = await fetch_server_key(live.url)
    init = valid_initiation(server_public)
    header: str | None = b64(init)
    upgrade: str | None = "tailscale-control-protocol"
    if case == "no-upgrade":
        upgrade = None
    elif case == "wrong-upgrade":
        upgrade = "websocket"
    elif case == "no-header":
        header = None
    elif case == "bad-base64":
        header = "!!not*base64!!"
    elif case == "short":
        header = b64(init[:-1])
    elif case == "long":
        header = b64(init + b"\x00")
    elif case == "wrong-type":
        header = b64(init[:2] + b"\x04" + init[3:])
    elif case == "wrong-length":
        header = b64(init[:3] + struct.pack(">H", 95) + init[5:])
    elif case == "random-bytes":
        header = b64(init[:5] + bytes(range(96)))
    elif case == "wrong-server-key":
        header = b64(valid_initiation(MachinePrivate.generate().public()))
    status, body = await http_exchange(live, upgrade_request(live, header, upgrade))
    assert status == 400, body
    assert body.strip()
    await still_serving(live)


async def test_key_endpoint(live: LiveServer) -> None:
    status, body = await http_exchange(live, b"GET /key?v=130 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    answer = json.loads(body)
    assert MachinePublic.from_text(answer["publicKey"]) == await fetch_server_key(live.url)


class RawSession:
    """A TS2021 connection driven byte by byte after a real handshake."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: noise.Session
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.session = session
        self._decoder = noise.RecordDecoder(session.recv)
        self._plaintexts: deque[bytes] = deque()

    @classmethod
    async def open(cls, live: LiveServer) -> RawSession:
        return await cls.open_as(live, MachinePrivate.generate())

    @classmethod
    async def open_as(cls, live: LiveServer, machine_key: MachinePrivate) -> RawSession:
        server_public = await fetch_server_key(live.url)
        initiator = noise.Initiator(machine_key, server_public, 130)
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        writer.write(upgrade_request(live, b64(initiator.initiation())))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        header = await reader.readexactly(3)
        session = initiator.finish(header + await reader.readexactly(struct.unpack(">H", header[1:])[0]))
        raw = cls(reader, writer, session)
        early = await raw.read_record()
        assert early.startswith(b"\xff\xff\xffTS")
        return raw

    async def read_record(self) -> bytes:
        """The plaintext of the server's next record (zero-byte ones too)."""
        while not self._plaintexts:
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            if not data:
                self._decoder.end()
                raise ConnectionError("the server closed the connection")
            self._plaintexts.extend(self._decoder.feed(data))
        return self._plaintexts.popleft()

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def closed_by_server(self, within: float = 5.0) -> bool:
        """Drain whatever the server still sends; True when it closes the connection."""

        async def drain() -> None:
            while await self.reader.read(65536):
                pass

        await asyncio.wait_for(drain(), within)
        return True

    def close(self) -> None:
        self.writer.close()


async def closed_after(live: LiveServer, data: bytes, *, sealed: bool = False) -> bool:
    """Send `data` (`sealed`: as Noise records) in a fresh session, then end our side: True when the server
    closes."""
    raw = await RawSession.open(live)
    try:
        raw.send(raw.session.send.seal_records(data) if sealed else data)
        await raw.writer.drain()
        raw.writer.write_eof()
        return await raw.closed_by_server()
    finally:
        raw.close()


def h2_request(body: dict[str, Any] | bytes, path: str = "/machine/register", method: str = "POST") -> bytes:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.send_headers(1, [(":method", method), (":path", path), (":scheme", "http"), (":authority", "x")])
    conn.send_data(1, payload, end_stream=True)
    return conn.data_to_send()


@pytest.mark.parametrize(
    "case",
    [
        "truncated-header",
        "truncated-record",
        "oversized",
        "invalid-type",
        "handshake-type",
        "tampered",
        "replayed",
        "short-record",
        "h2-garbage",
        "h2-bad-frame",
        "h2-bad-headers",
    ],
)
async def test_garbage_after_upgrade_closes_connection(live: LiveServer, case: str) -> None:
    other = await live.node("other")
    other_map = open_map(other)
    await other_map.next()
    raw = await RawSession.open(live)
    try:
        send = raw.session.send
        if case == "truncated-header":
            raw.send(b"\x04\x00")
            raw.writer.write_eof()
        elif case == "truncated-record":
            record = send.seal_records(b"hello")
            raw.send(record[:-3])
            raw.writer.write_eof()
        elif case == "oversized":
            raw.send(struct.pack(">BH", noise.MSG_RECORD, 0xFFFF) + b"\x00" * 100)
        elif case == "invalid-type":
            raw.send(struct.pack(">BH", 9, 20) + b"\x00" * 20)
        elif case == "handshake-type":
            raw.send(struct.pack(">BH", noise.MSG_INITIATION, 96) + b"\x00" * 96)
        elif case == "short-record":
            raw.send(struct.pack(">BH", noise.MSG_RECORD, 4) + b"\x00" * 4)
        elif case == "tampered":
            tampered = bytearray(send.seal_records(h2_request({})))
            tampered[10] ^= 0xFF
            raw.send(bytes(tampered))
        elif case == "replayed":
            record = send.seal_records(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            raw.send(record + record)
        elif case == "h2-garbage":
            raw.send(send.seal_records(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\x00" * 100))
        elif case == "h2-bad-frame":
            preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            # a DATA frame on stream 0 is a connection error
            raw.send(
                send.seal_records(
                    preface
                    + struct.pack(">I", 0)[1:]
                    + b"\x00\x00"
                    + b"\x00\x00\x00\x00"
                    + b"\x00\x00\x05\x00\x01\x00\x00\x00\x00hello"
                )
            )
        elif case == "h2-bad-headers":
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            data = conn.data_to_send()
            # a HEADERS frame whose HPACK block is garbage
            block = b"\xff\xff\xff\xff\xff\xff"
            data += struct.pack(">I", len(block))[1:] + b"\x01\x05" + struct.pack(">I", 1) + block
            raw.send(send.seal_records(data))
        await raw.writer.drain()
        assert await raw.closed_by_server()
    finally:
        raw.close()
    # the established stream of another node is unaffected, and new clients are served
    other_id = live.record(other).id
    assert live.store.is_online(other_id)
    status, _ = await other.client.request(
        "POST", "/machine/map", {"NodeKey": other.node_key_text, "OmitPeers": True}
    )
    assert status == 200
    await other_map.close()
    await still_serving(live)


async def test_idle_client_disconnect_mid_request(live: LiveServer) -> None:
    """A client that opens a stream, sends half a body and disappears leaves nothing behind."""
    raw = await RawSession.open(live)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(
        1, [(":method", "POST"), (":path", "/machine/register"), (":scheme", "http"), (":authority", "x")]
    )
    conn.send_data(1, b'{"NodeKey": ')
    raw.send(raw.session.send.seal_records(conn.data_to_send()))
    await raw.writer.drain()
    raw.close()
    await still_serving(live)


@pytest.mark.parametrize(
    "body, field",
    [
        (b"{", "body"),
        (b"[]", "body"),
        (b'{"NodeKey": "nodekey:zz"}', "NodeKey"),
        (b'{"NodeKey": "' + ("nodekey:" + "ab" * 32).encode() + b'", "Version": "x"}', "Version"),
    ],
)
@pytest.mark.parametrize("path", ["/machine/register", "/machine/map"])
async def test_invalid_json_is_400_naming_the_problem(
    live: LiveServer, body: bytes, field: str, path: str
) -> None:
    client = await live.client()
    status, data = await client.request("POST", path, body)
    assert status == 400
    assert f": {field}:" in data.decode(), data
    await still_serving(live)


@pytest.mark.parametrize(
    "method, path, statuses",
    [
        ("POST", "/nothing", {404}),
        ("GET", "/machine/register", {405}),
        ("POST", "/machine/set-dns", {501, 404}),
        ("POST", "/machine/id-token", {501, 404}),
        ("PUT", "/", {404}),
    ],
)
async def test_unknown_inner_paths(live: LiveServer, method: str, path: str, statuses: set[int]) -> None:
    client = await live.client()
    status, _ = await client.request(method, path, {})
    assert status in statuses
    # the connection is still usable afterwards
    answer = await client.register(NodePrivate.generate(), auth_key=await live.preauth_key())
    assert answer["MachineAuthorized"]


async def test_map_for_unknown_node_is_404(live: LiveServer) -> None:
    client = await live.client()
    status, data = await client.request(
        "POST",
        "/machine/map",
        {"NodeKey": NodePrivate.generate().public().text, "Stream": True},
    )
    assert status == 404, data
    await still_serving(live)


async def test_map_with_another_machines_node_key_refused(live: LiveServer) -> None:
    victim = await live.node("victim")
    thief = await live.client()
    for stream in (True, False):
        status, _ = await thief.request(
            "POST",
            "/machine/map",
            {"NodeKey": victim.node_key_text, "Stream": stream, "Endpoints": ["203.0.113.1:1"]},
        )
        assert status in (401, 403)
    assert live.record(victim).endpoints == []
    await still_serving(live)


async def test_oversized_request_body_refused(live: LiveServer) -> None:
    """A body over the 1 MiB limit gets its stream refused; the connection and the server carry on.

    Driven with a raw HTTP/2 connection: our ControlClient waits for window updates that a reset stream never
    gets.
    """
    raw = await RawSession.open(live)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(
        1, [(":method", "POST"), (":path", "/machine/register"), (":scheme", "http"), (":authority", "x")]
    )
    raw.send(raw.session.send.seal_records(conn.data_to_send()))
    remaining = 2 << 20
    reset = False
    buffer = b""

    async def pump() -> None:
        nonlocal buffer, reset
        data = await raw.read_record()
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.StreamReset) and event.stream_id == 1:
                reset = True
            elif isinstance(event, h2.events.ResponseReceived) and event.stream_id == 1:
                reset = True  # an error status is as good as a reset
        out = conn.data_to_send()
        if out:
            raw.send(raw.session.send.seal_records(out))

    try:
        while not reset:
            window = min(conn.local_flow_control_window(1), conn.max_outbound_frame_size) if remaining else 0
            if window > 0:
                chunk = min(window, remaining)
                conn.send_data(1, b" " * chunk)
                remaining -= chunk
                raw.send(raw.session.send.seal_records(conn.data_to_send()))
                await raw.writer.drain()
            else:
                await asyncio.wait_for(pump(), 5)
        assert remaining > 0, "the whole oversized body was accepted"
    finally:
        raw.close()
    await still_serving(live)


async def test_old_capability_version_refused(live: LiveServer) -> None:
    client = await live.client()
    status, data = await client.request(
        "POST",
        "/machine/register",
        {"Version": 10, "NodeKey": NodePrivate.generate().public().text},
    )
    assert status == 400 and b"too old" in data


async def test_many_abrupt_connections(live: LiveServer) -> None:
    """Connections dropped at every stage of the upgrade leave the server serving."""
    server_public = await fetch_server_key(live.url)
    for cut in (0, 10, 40, 100, 200):
        _reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        writer.write(upgrade_request(live, b64(valid_initiation(server_public)))[:cut])
        await writer.drain()
        writer.close()
    for _ in range(3):
        raw = await RawSession.open(live)
        raw.close()
    await still_serving(live)


async def test_stalled_map_reader_does_not_hold_up_others(live: LiveServer) -> None:
    """A client that grants almost no HTTP/2 window stalls only its own map stream."""
    stalled_node = await live.node("stalled")
    raw = await RawSession.open_as(live, stalled_node.machine_key)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 64}
    )
    conn.initiate_connection()
    body = json.dumps(
        {"Version": 130, "NodeKey": stalled_node.node_key_text, "Stream": True, "Compress": "zstd"}
    )
    conn.send_headers(
        1, [(":method", "POST"), (":path", "/machine/map"), (":scheme", "http"), (":authority", "x")]
    )
    conn.send_data(1, body.encode(), end_stream=True)
    raw.send(raw.session.send.seal_records(conn.data_to_send()))
    await raw.writer.drain()
    try:
        stalled_id = live.record(stalled_node).id
        await asyncio.wait_for(_until(lambda: live.store.is_online(stalled_id)), 5)
        # everyone else carries on: joins, deltas, fresh maps
        a = await live.node("a")
        reader = open_map(a)
        try:
            await reader.next()
            b = await live.node("b")
            b_id = live.record(b).id
            await reader.wait_for(lambda m: b_id in {p["ID"] for p in m.get("PeersChanged", [])})
        finally:
            await reader.close()
        await still_serving(live)
    finally:
        raw.close()


async def _until(predicate: Any) -> None:
    while not predicate():  # noqa: ASYNC110 - polling server state from outside
        await asyncio.sleep(0.02)


async def test_key_with_trailing_newline_refused(live: LiveServer) -> None:
    """A node key text with a trailing newline is not a second spelling of the same key.

    Accepted, it would be stored and sent to every peer as a key no Tailscale client can parse.
    """
    victim = await live.node("victim")
    thief = await live.client()
    status, data = await thief.request(
        "POST",
        "/machine/register",
        {
            "Version": 130,
            "NodeKey": victim.node_key_text + "\n",
            "Auth": {"AuthKey": await live.preauth_key()},
        },
    )
    assert status == 400 and b"NodeKey" in data
    assert len(live.store.nodes) == 1
    await still_serving(live)


async def test_hostinfo_and_endpoints_peers_cannot_decode_are_refused(live: LiveServer) -> None:
    """Hostinfo and Endpoints are forwarded to peers, whose Go client decodes them into typed fields; a node
    must not be able to break its peers' maps by sending wrongly typed ones."""
    a = await live.node("a")
    b = await live.node("b")
    reader = open_map(a)
    try:
        await reader.next()
        for body in (
            {"Hostinfo": {"Hostname": "b", "OS": 42}},
            {"Hostinfo": {"Hostname": "b", "NetInfo": {"PreferredDERP": "one"}}},
            {"Endpoints": ["not-an-endpoint"]},
        ):
            status, data = await b.client.request(
                "POST",
                "/machine/map",
                {"Version": 130, "NodeKey": b.node_key_text, "OmitPeers": True, **body},
            )
            assert status == 400, data
            assert next(iter(body)).encode() in data
        stored = live.record(b)
        assert stored.endpoints == [] and "NetInfo" not in stored.hostinfo
    finally:
        await reader.close()
    await still_serving(live)


async def test_zero_byte_records_are_not_end_of_stream(live: LiveServer) -> None:
    """Zero-byte records are legal in TS2021 and must not end the session."""
    raw = await RawSession.open(live)
    try:
        send = raw.session.send
        body = {
            "NodeKey": NodePrivate.generate().public().text,
            "Auth": {"AuthKey": await live.preauth_key()},
        }
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(
            1, [(":method", "POST"), (":path", "/machine/register"), (":scheme", "http"), (":authority", "x")]
        )
        conn.send_data(1, json.dumps(body).encode(), end_stream=True)
        raw.send(send.seal_records(b"") + send.seal_records(conn.data_to_send()) + send.seal_records(b""))
        await raw.writer.drain()
        answer = b""
        status = 0
        ended = False
        while not ended:
            for event in conn.receive_data(await raw.read_record()):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    answer += event.data
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            out = conn.data_to_send()
            if out:
                raw.send(send.seal_records(out))
        assert status == 200 and json.loads(answer)["MachineAuthorized"] is True
    finally:
        raw.close()


@pytest.mark.parametrize("node_key", ["", "nodekey:" + "0" * 64])
async def test_register_without_a_real_node_key_refused(live: LiveServer, node_key: str) -> None:
    client = await live.client()
    status, data = await client.request(
        "POST",
        "/machine/register",
        {"Version": 130, "NodeKey": node_key, "Auth": {"AuthKey": await live.preauth_key()}},
    )
    assert status == 400 and b"NodeKey" in data
    assert not live.store.nodes


async def test_fuzzed_http2_inside_noise(live: LiveServer) -> None:
    """Valid HTTP/2 with random corruption, inside a valid Noise session: a clean close or an answer, never a
    hang or a server that stops serving."""
    import random

    rng = random.Random(20211)
    template = h2_request({"NodeKey": NodePrivate.generate().public().text})
    for _ in range(25):
        data = bytearray(template)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        assert await closed_after(live, bytes(data), sealed=True)
    await still_serving(live)


async def test_fuzzed_bytes_after_upgrade(live: LiveServer) -> None:
    import random

    rng = random.Random(4077)
    for _ in range(25):
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 600)))
        assert await closed_after(live, junk)
    await still_serving(live)


async def test_control_client_survives_refused_upload(live: LiveServer) -> None:
    client = await live.client()
    status, _ = await asyncio.wait_for(client.request("POST", "/machine/register", b" " * (2 << 20)), 3)
    assert status != 200
    # The refusal cost one stream, not the connection: the same client registers next.
    answer = await client.register(NodePrivate.generate(), auth_key=await live.preauth_key())
    assert answer["MachineAuthorized"], answer


async def test_silent_client_after_upgrade_is_disconnected(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that completes the Noise handshake and then says nothing may not hold a connection forever."""
    monkeypatch.setattr("pyheadscale.control.ts2021.HANDSHAKE_TIMEOUT", 0.5)
    raw = await RawSession.open(live)
    try:
        assert await raw.closed_by_server(within=5.0)
    finally:
        raw.close()
    await still_serving(live)


async def test_map_request_for_a_node_deleted_meanwhile_is_a_404(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await live.node("doomed")
    stored = live.record(node)
    original = live.store.update_from_map_request

    async def delete_first(*args: Any, **kwargs: Any) -> Any:
        await live.store.delete_node(stored.id)
        return await original(*args, **kwargs)

    # The node goes while its map request is in flight.
    monkeypatch.setattr(live.store, "update_from_map_request", delete_first)
    body = {
        "Version": 130,
        "NodeKey": node.node_key_text,
        "Stream": False,
        "OmitPeers": True,
        "Endpoints": ["192.0.2.1:41641"],
    }
    status, text = await node.client.request("POST", "/machine/map", body)
    assert status == 404, text
