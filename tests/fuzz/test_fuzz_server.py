"""What reaches a running server over HTTP: REST bodies (/api/v1), OIDC callback and confirmation parameters,
registration links and the TS2021 upgrade. Bad input gets a 4xx naming what was wrong, never a 500, and a
connection that breaks the protocol after the upgrade is closed."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pyheadscale.auth.interactive import PendingLogin
from pyheadscale.auth.oidc_sessions import BROWSER_COOKIE, new_browser_id
from pyheadscale.control import noise
from pyheadscale.tailkey import MachinePrivate, MachinePublic
from tests.fuzz import bounds
from tests.fuzz.seeds import json_values, mutated_bytes
from tests.live_server import LiveServer
from tests.ports import free_port

BODY_ROUTES = [
    ("POST", "/apikey"),
    ("POST", "/apikey/expire"),
    ("POST", "/auth/register"),
    ("POST", "/auth/approve"),
    ("POST", "/auth/reject"),
    ("POST", "/debug/node"),
    ("POST", "/node/register"),
    ("POST", "/node/backfillips"),
    ("POST", "/node/{id}/expire"),
    ("POST", "/node/{id}/rename/{name}"),
    ("POST", "/node/{id}/user"),
    ("POST", "/node/{id}/tags"),
    ("POST", "/node/{id}/approve_routes"),
    ("PUT", "/policy"),
    ("POST", "/preauthkey"),
    ("POST", "/preauthkey/expire"),
    ("DELETE", "/preauthkey"),
    ("POST", "/user"),
    ("POST", "/user/{id}/rename/{name}"),
]
FIELDS = [
    "name", "displayName", "email", "pictureUrl", "user", "reusable", "ephemeral", "aclTags", "expiration",
    "prefix", "key", "authId", "nodeId", "tags", "routes", "policy", "id", "backfill", "confirmed",
    "machineKey",
]  # fmt: skip
path_parts = st.one_of(st.sampled_from(["1", "2", "0", "-1", "99999999999999999999", "x", "%20"]), st.text())


@st.composite
def rest_calls(draw: st.DrawFn) -> tuple[str, str, bytes]:
    method, template = draw(st.sampled_from(BODY_ROUTES))
    path = template.replace("{id}", draw(path_parts)).replace("{name}", draw(path_parts))
    fields = draw(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5))
    body = draw(st.one_of(st.just(json.dumps(fields).encode()), st.binary(max_size=80)))
    return method, path, body


class Live:
    def __init__(self, loop: asyncio.AbstractEventLoop, live: LiveServer, api_key: str) -> None:
        self.loop = loop
        self.live = live
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {api_key}"})
        self.browser = aiohttp.ClientSession()

    async def status(self, method: str, url: str, **kwargs: Any) -> int:
        async with self.http.request(method, url, allow_redirects=False, **kwargs) as response:
            await response.read()
            return response.status


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    loop = asyncio.new_event_loop()
    data_dir = Path(tempfile.mkdtemp(prefix="phs-fuzz-"))
    # Thousands of handshakes from one address: the limiter would answer 429 before any parser ran.
    unlimited = {"per_second": 1e6, "burst": 1_000_000}
    oidc = {
        "issuer": f"http://127.0.0.1:{free_port()}",
        "client_id": "fuzz",
        "client_secret": "fuzz-secret",
        "only_start_if_oidc_is_available": False,
    }

    async def start() -> Live:
        started = await LiveServer(
            data_dir,
            keepalive=30.0,
            policy={"mode": "database"},
            limits={"rate": {"handshakes": unlimited, "registrations": unlimited}},
            oidc=oidc,
        ).start()
        _, key = await started.store.create_api_key(None)
        return Live(loop, started, key)

    fixture = loop.run_until_complete(start())
    try:
        yield fixture
    finally:

        async def stop() -> None:
            await fixture.http.close()
            await fixture.browser.close()
            await fixture.live.stop()

        loop.run_until_complete(stop())
        loop.close()
        shutil.rmtree(data_dir, ignore_errors=True)


@given(rest_calls())
@example(("PUT", "/policy", json.dumps({"policy": "[" * 50_000}).encode()))
@example(("POST", "/user", b"[" * 50_000))
def test_rest_bodies(live: Live, call: tuple[str, str, bytes]) -> None:
    method, path, body = call
    url = live.live.url + "/api/v1" + path
    headers = {"Content-Type": "application/json"}
    status = bounds.run(live.loop, "rest", lambda: live.status(method, url, data=body, headers=headers))
    assert status is not None and status < 500, (method, path, body[:200], status)


@given(st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=100)))
@example(b"[" * 4096)
@example(b'{"NodePublic": "nodekey:' + b"0" * 64 + b'"}')
def test_derp_verify_bodies(live: Live, body: bytes) -> None:
    url = live.live.url + "/verify"
    status = bounds.run(live.loop, "verify", lambda: live.status("POST", url, data=body))
    assert status in (200, 400, 413), (body[:100], status)


callback_params = st.dictionaries(
    st.sampled_from(["state", "code", "error", "error_description", "session_state", "iss"]),
    st.text(max_size=60),
    max_size=5,
)


@given(callback_params, st.text(max_size=60))
@example({"state": "x" * 4000, "code": "y"}, "")
@example({"error": "access_denied", "error_description": "\x00" * 300}, "")
def test_oidc_callback(live: Live, params: dict[str, str], cookie: str) -> None:
    url = live.live.url + "/oidc/callback"

    async def get() -> int:
        cookies = {"pyhs_oidc_browser": cookie} if cookie.isprintable() and cookie.isascii() else {}
        async with live.browser.get(url, params=params, cookies=cookies, allow_redirects=False) as response:
            await response.read()
            return response.status

    status = bounds.run(live.loop, "oidc.callback", get)
    assert status in (400, 403, 410), (params, status)


@given(callback_params, st.booleans())
@example({"error": "x" * 5000, "error_description": ""}, True)
@example({"code": "c" * 500}, True)
def test_oidc_callback_for_a_login_in_flight(live: Live, params: dict[str, str], same_browser: bool) -> None:
    """A callback that carries the state of a real login in flight (and usually its browser's cookie): the
    provider's error, a missing code, or a code the (unreachable) provider cannot redeem; never a node."""
    oidc = live.live.server.oidc
    assert oidc is not None

    async def start_login() -> PendingLogin:
        return live.live.server.logins.start(
            "mkey:" + "1" * 64, "nodekey:" + "2" * 64, {"Hostname": "fuzz", "OS": "linux"}
        )

    login = live.loop.run_until_complete(start_login())
    browser = new_browser_id()
    session = oidc.sessions.begin(login.auth_id, browser)
    query = {**params, "state": session.state}
    cookies = {BROWSER_COOKIE: browser if same_browser else new_browser_id()}

    async def get() -> int:
        url = live.live.url + "/oidc/callback"
        async with live.browser.get(url, params=query, cookies=cookies, allow_redirects=False) as response:
            await response.read()
            return response.status

    status = bounds.run(live.loop, "oidc.callback_in_flight", get)
    expected = (400, 403, 502) if same_browser else (403,)
    assert status in expected, (params, status)
    assert not live.live.store.nodes
    live.live.server.logins.reject(login)
    assert login.outcome.exception() is not None  # retrieved: no "never retrieved" warning


@given(st.dictionaries(st.sampled_from(["auth_id", "csrf_token", "x"]), st.text(max_size=60), max_size=3))
def test_oidc_confirm(live: Live, form: dict[str, str]) -> None:
    url = live.live.url + "/oidc/confirm"

    async def post() -> int:
        async with live.browser.post(url, data=form, allow_redirects=False) as response:
            await response.read()
            return response.status

    assert bounds.run(live.loop, "oidc.confirm", post) == 403
    assert not live.live.store.nodes


@given(st.text(max_size=80))
def test_registration_links(live: Live, auth_id: str) -> None:
    url = live.live.url + "/register/" + quote(auth_id, safe="")
    status = bounds.run(live.loop, "register.link", lambda: live.status("GET", url))
    assert status in (400, 404), (auth_id, status)


@given(
    st.sampled_from(["tailscale-control-protocol", "", "websocket", "TAILSCALE-control-protocol"]),
    st.one_of(st.binary(max_size=120).map(base64.b64encode), st.text(max_size=40).map(str.encode)),
)
def test_ts2021_upgrade_headers(live: Live, upgrade: str, handshake: bytes) -> None:
    url = live.live.url + "/ts2021"
    headers = {
        "Upgrade": upgrade,
        "Connection": "upgrade",
        "X-Tailscale-Handshake": handshake.decode("latin-1"),
    }
    headers = {k: v for k, v in headers.items() if v.isprintable()}
    status = bounds.run(live.loop, "ts2021.upgrade", lambda: live.status("POST", url, headers=headers))
    assert status == 400


async def upgrade_then_send(live: Live, after: bytes) -> bytes:
    """Upgrade with a valid handshake, then write `after` and half-close; what the server wrote until it
    closed the connection."""
    url = live.live.url
    async with live.browser.get(url + "/key?v=130") as response:
        key_text = (await response.json())["publicKey"]
    server_public = MachinePublic.from_text(key_text)
    init = noise.Initiator(MachinePrivate.generate(), server_public, 130).initiation()
    host, port = live.live.raw["listen_addr"].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /ts2021 HTTP/1.1\r\nHost: control\r\nUpgrade: tailscale-control-protocol\r\n"
            b"Connection: upgrade\r\nX-Tailscale-Handshake: " + base64.b64encode(init) + b"\r\n\r\n"
        )
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(after)
        await writer.drain()
        writer.write_eof()
        await reader.read()  # until the server closes the connection
        return head
    finally:
        writer.close()


@given(st.one_of(mutated_bytes([b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(9)]), st.binary(max_size=200)))
@example(b"\x04\xff\xff" + bytes(100))
def test_ts2021_after_the_upgrade(live: Live, after: bytes) -> None:
    answer = bounds.run(live.loop, "ts2021.stream", lambda: upgrade_then_send(live, after))
    assert answer is not None and answer.startswith(b"HTTP/1.1 101"), answer


def test_deeply_nested_json_bodies_are_400(live: Live) -> None:
    """api/params.json_body and control/verify.py: RecursionError from json.loads was a 500."""
    nested = b"[" * 4096
    user = live.live.url + "/api/v1/user"
    assert live.loop.run_until_complete(live.status("POST", user, data=nested)) == 400
    verify = live.live.url + "/verify"
    assert live.loop.run_until_complete(live.status("POST", verify, data=nested)) == 400


def test_a_client_leaving_during_the_upgrade_is_no_error(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    """control/ts2021.py: a client that half-closed before the 101 made aiohttp log an unhandled
    ConnectionResetError from the handler."""

    async def leave_early() -> None:
        async with live.browser.get(live.live.url + "/key?v=130") as response:
            key_text = (await response.json())["publicKey"]
        server_public = MachinePublic.from_text(key_text)
        init = noise.Initiator(MachinePrivate.generate(), server_public, 130).initiation()
        host, port = live.live.raw["listen_addr"].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /ts2021 HTTP/1.1\r\nHost: control\r\nUpgrade: tailscale-control-protocol\r\n"
            b"Connection: upgrade\r\nX-Tailscale-Handshake: " + base64.b64encode(init) + b"\r\n\r\n"
        )
        writer.write_eof()
        await reader.read()
        writer.close()
        await asyncio.sleep(0.2)

    live.loop.run_until_complete(leave_early())
    assert "Error handling request" not in caplog.text
