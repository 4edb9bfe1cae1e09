"""headscale.v1.HeadscaleService over gRPC: API-key metadata, the same answers and refusals as REST."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from pyheadscale.cli.main import main
from pyheadscale.config import build_config
from pyheadscale.grpc.schema import pb, services
from pyheadscale.grpc.server import serves_remote_grpc
from tests.grpc.headscale_cli_driver import self_signed
from tests.live_server import LiveServer, StartLive
from tests.ports import free_port


async def _key(live: LiveServer) -> str:
    _record, text = await live.store.create_api_key(None)
    return str(text)


def _auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def test_calls_need_a_valid_api_key(grpc_live: LiveServer) -> None:
    async with aio.insecure_channel(grpc_live.grpc_address) as channel:
        stub: Any = services.HeadscaleServiceStub(channel)
        with pytest.raises(aio.AioRpcError) as missing:
            await stub.ListUsers(pb.ListUsersRequest())
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization: Bearer" in str(missing.value.details())
        with pytest.raises(aio.AioRpcError) as wrong:
            await stub.ListUsers(pb.ListUsersRequest(), metadata=_auth("hskey-api-000000000000-" + "0" * 64))
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        key = await _key(grpc_live)
        answer = await stub.ListUsers(pb.ListUsersRequest(), metadata=_auth(key))
        assert list(answer.users) == []


async def test_users_nodes_and_keys_round_trip(grpc_live: LiveServer) -> None:
    key = await _key(grpc_live)
    async with aio.insecure_channel(grpc_live.grpc_address) as channel:
        stub: Any = services.HeadscaleServiceStub(channel)
        created = (await stub.CreateUser(pb.CreateUserRequest(name="alice"), metadata=_auth(key))).user
        assert (created.id, created.name) == (1, "alice") and created.HasField("created_at")
        with pytest.raises(aio.AioRpcError) as duplicate:
            await stub.CreateUser(pb.CreateUserRequest(name="alice"), metadata=_auth(key))
        assert duplicate.value.code() == grpc.StatusCode.ALREADY_EXISTS
        preauth = (
            await stub.CreatePreAuthKey(
                pb.CreatePreAuthKeyRequest(user=1, reusable=True), metadata=_auth(key)
            )
        ).pre_auth_key
        assert preauth.key.startswith("hskey-auth-") and preauth.user.name == "alice" and preauth.reusable
        with pytest.raises(aio.AioRpcError) as missing:
            await stub.GetNode(pb.GetNodeRequest(node_id=9), metadata=_auth(key))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND and "node 9" in str(missing.value.details())
        with pytest.raises(aio.AioRpcError) as refused:
            await stub.CheckPolicy(pb.CheckPolicyRequest(policy="{not json"), metadata=_auth(key))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        health = await stub.Health(pb.HealthRequest(), metadata=_auth(key))
        assert health.database_connectivity


async def test_not_served_without_tls_or_allow_insecure(tmp_path: Path) -> None:
    """Headscale serves remote gRPC only with TLS or grpc_allow_insecure; so does pyheadscale."""
    raw = {"server_url": "http://127.0.0.1:1", "grpc_listen_addr": "127.0.0.1:1"}
    assert not serves_remote_grpc(build_config(raw, data_dir=tmp_path))
    assert serves_remote_grpc(build_config(raw | {"grpc_allow_insecure": True}, data_dir=tmp_path))


async def test_our_cli_reaches_the_grpc_api_as_headscales_does(start_live: StartLive, tmp_path: Path) -> None:
    """HEADSCALE_CLI_ADDRESS=host:port (no scheme) is the gRPC API over TLS; INSECURE accepts any cert."""
    cert, key = self_signed(tmp_path)
    address = f"127.0.0.1:{free_port()}"
    live = await start_live(grpc_listen_addr=address, tls_cert_path=str(cert), tls_key_path=str(key))
    server = live.server
    assert server.store is not None
    await server.store.create_user("alice")
    _record, api_key = await server.store.create_api_key(None)

    def run(*argv: str, **env: str) -> tuple[int, str, str]:
        saved = dict(os.environ)
        os.environ.update({"HEADSCALE_CLI_ADDRESS": address, "HEADSCALE_CLI_API_KEY": api_key, **env})
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(list(argv))
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return code, out.getvalue(), err.getvalue()

    code, out, err = await asyncio.to_thread(
        run, "users", "list", "-o", "json", HEADSCALE_CLI_INSECURE="true"
    )
    assert code == 0, err
    assert [u["name"] for u in json.loads(out)] == ["alice"]
    code, out, err = await asyncio.to_thread(run, "users", "create", "bob", HEADSCALE_CLI_INSECURE="true")
    assert (code, out) == (0, "User created\n") and server.store.user_by_name("bob") is not None
    # Without INSECURE the self-signed certificate is not trusted: a clean error, no traceback.
    code, out, err = await asyncio.to_thread(run, "users", "list", HEADSCALE_CLI_INSECURE="false")
    assert code == 1 and err.startswith("Error: ") and "Traceback" not in err
    code, out, err = await asyncio.to_thread(run, "auth", "list", HEADSCALE_CLI_INSECURE="true")
    assert code == 1 and "REST API" in err


async def test_an_oversized_request_is_refused(grpc_live: LiveServer) -> None:
    key = await _key(grpc_live)
    async with aio.insecure_channel(
        grpc_live.grpc_address, options=[("grpc.max_send_message_length", 8 << 20)]
    ) as channel:
        stub: Any = services.HeadscaleServiceStub(channel)
        with pytest.raises(aio.AioRpcError) as refused:
            await stub.CheckPolicy(pb.CheckPolicyRequest(policy="x" * (2 << 20)), metadata=_auth(key))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await stub.Health(pb.HealthRequest(), metadata=_auth(key))).database_connectivity


async def test_repeated_refusals_are_rate_limited(grpc_live: LiveServer) -> None:
    """As on REST: a source that keeps presenting bad keys is turned away before its key is checked."""
    bad = _auth("hskey-api-000000000000-" + "0" * 64)
    burst = grpc_live.server.config.limits.rate.api_auth_failures.burst
    codes = []
    async with aio.insecure_channel(grpc_live.grpc_address) as channel:
        stub: Any = services.HeadscaleServiceStub(channel)
        for _ in range(int(burst) + 5):
            with pytest.raises(aio.AioRpcError) as refused:
                await stub.ListUsers(pb.ListUsersRequest(), metadata=bad)
            codes.append(refused.value.code())
    assert codes[0] == grpc.StatusCode.UNAUTHENTICATED
    assert codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_live.server.metrics.auth_failures.labels("apikey")._value.get() >= 1
