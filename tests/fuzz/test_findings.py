"""One regression test per fuzz finding: each failed before its fix (the fix is named in the test)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import h2.config
import h2.connection
import pytest

from derp.frames import FrameType, ProtocolError, encode_frame
from derp.handshake import ClientInfo
from derp.server import DerpServer
from pyheadscale.auth.oidc_claims import Claims
from pyheadscale.config import ConfigError, load_config
from pyheadscale.policy import PolicyEngine, PolicyError, hujson
from pyheadscale.tailkey import NodePrivate
from tests.fuzz.test_fuzz_derp import MemoryConn
from tests.fuzz.test_fuzz_h2 import serve


def test_hujson_nesting_is_bounded() -> None:
    """hujson.MAX_DEPTH: a recursive parser hit RecursionError on `[[[[...`."""
    assert hujson.loads("[" * 64 + "]" * 64) == json.loads("[" * 64 + "]" * 64)
    with pytest.raises(hujson.HuJSONError, match="nested more than 64 levels"):
        hujson.loads("[" * 100_000)
    with pytest.raises(PolicyError, match="nested more than 64 levels"):
        PolicyEngine('{"acls": ' + "[" * 100_000 + "}")


def test_derp_client_info_nested_json_is_a_protocol_error() -> None:
    """derp/handshake.py _json_object: RecursionError escaped decode_client_info and DerpServer.accept."""
    with pytest.raises(ProtocolError, match="not valid JSON"):
        ClientInfo.from_json(b"[" * 100_000)

    server_key, client_key = NodePrivate.generate(), NodePrivate.generate()
    payload = client_key.public() + client_key.seal_to(server_key.public(), b"[" * 100_000)

    async def login() -> bool:
        server = DerpServer(server_key, handshake_timeout=5.0)
        conn = MemoryConn(encode_frame(FrameType.CLIENT_INFO, payload))
        await server.accept(conn)
        await server.close(grace=0)
        return conn.closed

    assert asyncio.run(login()), "the connection is refused and closed"


def test_config_that_is_not_utf8_or_nests_deeply_is_a_config_error(tmp_path: Path) -> None:
    """config.parse_yaml: UnicodeDecodeError escaped load_config; deep flow nesting recursed and took
    quadratic time in the pure-Python YAML loader."""
    path = tmp_path / "config.yaml"
    path.write_bytes(b"server_url: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(path))
    path.write_bytes(b"[" * 20_000 + b"]" * 20_000)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(path))


def test_an_infinite_token_expiry_is_no_expiry() -> None:
    """oidc_claims._timestamp: int(inf) raised OverflowError (json.loads accepts Infinity)."""
    base = {"iss": "https://id.example.com", "sub": "u1"}
    assert Claims.from_tokens({**base, "exp": float("inf")}, None).exp is None
    assert Claims.from_tokens({**base, "exp": 1e308}, None).exp is None
    assert Claims.from_tokens({**base, "exp": 1_900_000_000.5}, None).exp == 1_900_000_000


def test_a_header_that_is_not_utf8_closes_the_http2_connection() -> None:
    """control/h2server.py: h2's UnicodeDecodeError on a non-UTF-8 header value escaped H2Server.serve()."""
    client = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=True, validate_outbound_headers=False)
    )
    client.initiate_connection()
    headers = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"), (b"x-name", b"\x91\x92")]
    client.send_headers(1, headers, end_stream=True)
    output = asyncio.run(serve([client.data_to_send()]))
    assert output, "the server's preface went out before it closed the connection"
