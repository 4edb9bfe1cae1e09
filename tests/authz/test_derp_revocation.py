"""DERP takes access away too: the embedded relay refuses expired node keys and closes the connections of a
node that is deleted, expires, logs out or rotates its key away; a standalone relay finds out by asking
`/verify` again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from derp.admission import AdmissionController, Verdict
from derp.client import DerpClient
from derp.server import DerpServer
from pyheadscale.tailkey import NodePrivate
from tests.authz.conftest import REFUSED, SLOW, derp_config
from tests.derp.harness import eventually, loopback_socket, serving, within
from tests.e2e.relays import StandaloneRelay
from tests.live_server import ClientNode, LiveServer, StartLive
from tests.ports import free_port


def derp_url(live: LiveServer) -> str:
    return f"{live.url}/derp"


async def connect(url: str, node: ClientNode) -> DerpClient:
    return await within(DerpClient.connect(url, node.node_key), SLOW)


async def closed_by_server(client: DerpClient) -> bool:
    """True once the server hangs up on `client` (reads frames until then)."""
    try:
        async with asyncio.timeout(SLOW):
            while True:
                await client.recv()
    except REFUSED:
        return True


# Each returns the moment (time.monotonic) the node's access ended.


async def delete(live: LiveServer, node: ClientNode, node_id: int) -> float:
    moment = time.monotonic()
    await live.store.delete_node(node_id)
    return moment


async def expire(live: LiveServer, node: ClientNode, node_id: int) -> float:
    moment = time.monotonic()
    await live.store.set_expiry(node_id, datetime.now(UTC))
    return moment


async def expire_by_clock(live: LiveServer, node: ClientNode, node_id: int) -> float:
    moment = time.monotonic() + 0.3
    await live.store.set_expiry(node_id, datetime.now(UTC) + timedelta(seconds=0.3))
    return moment


async def log_out(live: LiveServer, node: ClientNode, node_id: int) -> float:
    moment = time.monotonic()
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await node.client.register(node.node_key, expiry=past)
    return moment


async def rotate(live: LiveServer, node: ClientNode, node_id: int) -> float:
    """The old node key stops being the node's: its relay connection must not outlive it."""
    moment = time.monotonic()
    answer = await node.client.register(NodePrivate.generate(), old_node_key=node.node_key_text)
    assert answer["MachineAuthorized"] is True, answer
    return moment


Revoke = Callable[[LiveServer, ClientNode, int], Awaitable[float]]
HOW = [delete, expire, expire_by_clock, log_out, rotate]


@pytest.mark.parametrize("revoke", HOW, ids=lambda f: f.__name__)
async def test_embedded_relay_closes_revoked_connections(start_live: StartLive, revoke: Revoke) -> None:
    live: LiveServer = await start_live(derp=derp_config())
    a, b = await live.node("a"), await live.node("b")
    b_id = live.record(b).id
    derp = live.server.derp
    assert derp is not None
    ca, cb = await connect(derp_url(live), a), await connect(derp_url(live), b)
    try:
        assert derp.is_client_connected(b.node_key.public())
        moment = await revoke(live, b, b_id)
        assert await closed_by_server(cb)
        took = time.monotonic() - moment
        print(f"{revoke.__name__}: relay connection closed {took * 1000:.1f} ms after access ended")
        assert not derp.is_client_connected(b.node_key.public())
        assert derp.is_client_connected(a.node_key.public())
        with pytest.raises(REFUSED):
            await connect(derp_url(live), b)
    finally:
        await ca.close()
        await cb.close()


async def test_embedded_relay_refuses_expired_keys(start_live: StartLive) -> None:
    live: LiveServer = await start_live(derp=derp_config())
    b = await live.node("b")
    b_id = live.record(b).id
    await live.store.set_expiry(b_id, datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(REFUSED):
        await connect(derp_url(live), b)
    # Registering again restores it.
    await b.client.register(b.node_key, auth_key=await live.preauth_key())
    client = await connect(derp_url(live), b)
    await client.close()


async def test_verify_endpoint_refuses_expired_nodes(live: LiveServer) -> None:
    b = await live.node("b")
    b_id = live.record(b).id

    async def allowed() -> bool:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{live.url}/verify", json={"NodePublic": b.node_key_text}) as resp,
        ):
            assert resp.status == 200
            return bool((await resp.json())["Allow"])

    assert await allowed()
    await live.store.set_expiry(b_id, datetime.now(UTC))
    assert not await allowed()


class AdmissionProxy:
    """An admission URL that forwards to pyheadscale's /verify, or answers 500 once `broken` is set."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.asked = 0
        self.broken = False
        self.url = ""

    async def verify(self, request: web.Request) -> web.Response:
        self.asked += 1
        if self.broken:
            return web.Response(status=500, text="control server unavailable")
        async with aiohttp.ClientSession() as http, http.post(self.target, data=await request.read()) as resp:
            return web.Response(status=resp.status, body=await resp.read(), content_type="application/json")

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[AdmissionProxy]:
        app = web.Application()
        app.router.add_post("/verify", self.verify)
        runner = web.AppRunner(app)
        await runner.setup()
        sock = loopback_socket()
        await web.SockSite(runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/verify"
        try:
            yield self
        finally:
            await runner.cleanup()


async def test_standalone_relay_reverification_closes_deleted_nodes(live: LiveServer) -> None:
    a, b = await live.node("a"), await live.node("b")
    b_id = live.record(b).id
    relay = DerpServer(os.urandom(32), verify_client_url=f"{live.url}/verify", reverify_interval=0.2)
    async with serving(relay) as url:
        ca, cb = await connect(url, a), await connect(url, b)
        try:
            started = time.monotonic()
            await live.store.delete_node(b_id)
            assert await closed_by_server(cb)
            print(f"standalone relay closed the deleted node after {time.monotonic() - started:.2f} s")
            assert relay.is_client_connected(a.node_key.public())
            with pytest.raises(REFUSED):
                await connect(url, b)
        finally:
            await ca.close()
            await cb.close()
            await relay.close()


async def test_reverification_keeps_clients_when_control_gives_no_clear_answer(live: LiveServer) -> None:
    """A control server that errors or is down must not drop the whole region; only a refusal closes."""
    a = await live.node("a")
    async with AdmissionProxy(f"{live.url}/verify").serving() as proxy:
        relay = DerpServer(os.urandom(32), verify_client_url=proxy.url, reverify_interval=0.05)
        async with serving(relay) as url:
            client = await connect(url, a)
            try:
                await eventually(lambda: proxy.asked >= 2, SLOW)
                proxy.broken = True
                asked = proxy.asked
                await eventually(lambda: proxy.asked >= asked + 3, SLOW)
                assert relay.is_client_connected(a.node_key.public())
                # A clear refusal still closes it.
                proxy.broken = False
                await live.store.delete_node(live.record(a).id)
                assert await closed_by_server(client)
            finally:
                await client.close()
                await relay.close()


async def test_close_client_reaches_a_connection_still_being_admitted() -> None:
    """Revoked while the relay waits for its admission answer: the login must not complete afterwards."""
    asking = asyncio.Event()
    answer = asyncio.Event()

    async def slow_yes(node_key: bytes) -> bool:
        asking.set()
        await answer.wait()
        return True

    relay = DerpServer(os.urandom(32), verify_client=slow_yes)
    node_key = NodePrivate.generate()
    async with serving(relay) as url:
        login = asyncio.ensure_future(DerpClient.connect(url, node_key))
        await within(asking.wait(), SLOW)
        assert relay.close_client(node_key.public()) == 1
        answer.set()
        with pytest.raises(REFUSED):
            await within(login, SLOW)
        assert not relay.is_client_connected(node_key.public())
        await relay.close()


async def test_standalone_derper_process_reverifies(live: LiveServer, tmp_path: Path) -> None:
    """`pyheadscale-derper --verify-client-url ... --reverify-interval`, as an operator runs it."""
    a, b = await live.node("a"), await live.node("b")
    b_id = live.record(b).id
    relay = StandaloneRelay(tmp_path, "relay", "127.0.0.1", free_port(), free_port(socket.SOCK_DGRAM))
    relay.args += ["--verify-clients", "--verify-client-url", f"{live.url}/verify"]
    relay.args += ["--reverify-interval", "0.2"]
    await relay.start()
    try:
        ca, cb = await connect(relay.url, a), await connect(relay.url, b)
        await live.store.set_expiry(b_id, datetime.now(UTC))
        assert await closed_by_server(cb)
        await ca.ping(b"12345678")
        pong = await within(ca.recv(), SLOW)
        assert pong is not None  # a, still admitted, is still served
        await ca.close()
        with pytest.raises(REFUSED):
            await connect(relay.url, b)
    finally:
        await relay.stop()


async def test_admission_verdicts() -> None:
    """Only a 200 that does not allow the key is a refusal re-verification acts on; the rest is unclear."""
    answers: dict[str, Callable[[], web.Response]] = {}

    async def verify(request: web.Request) -> web.Response:
        return answers[request.query["case"]]()

    app = web.Application()
    app.router.add_post("/verify", verify)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = loopback_socket()
    await web.SockSite(runner, sock).start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}/verify"
    cases = {
        "allow": (lambda: web.json_response({"Allow": True}), Verdict.ALLOW),
        "allow-any-case": (lambda: web.json_response({"allow": True}), Verdict.ALLOW),
        "deny": (lambda: web.json_response({"Allow": False}), Verdict.DENY),
        "no-field": (lambda: web.json_response({}), Verdict.DENY),
        "error": (lambda: web.Response(status=500), Verdict.UNCLEAR),
        "not-json": (lambda: web.Response(text="<html>"), Verdict.UNCLEAR),
        "not-object": (lambda: web.json_response([True]), Verdict.UNCLEAR),
    }
    key = NodePrivate.generate().public()
    try:
        for case, (respond, expected) in cases.items():
            answers[case] = respond
            admission = AdmissionController(f"{base}?case={case}")
            try:
                assert await admission.verdict(key, "127.0.0.1") is expected, case
                assert await admission.allows(key, "127.0.0.1") is (expected is Verdict.ALLOW), case
            finally:
                await admission.close()
    finally:
        await runner.cleanup()
    gone = AdmissionController(base, fail_open=True)  # the listener is closed now
    try:
        assert await gone.verdict(key, "127.0.0.1") is Verdict.NO_ANSWER
        assert await gone.allows(key, "127.0.0.1") is True
    finally:
        await gone.close()
