"""headscale.v1.HeadscaleService over gRPC: API-key metadata, the same answers and refusals as REST."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc import aio

from pyheadscale.grpc.schema import pb, services
from tests.grpc.conftest import GrpcLive


async def _key(live: GrpcLive) -> str:
    _record, text = await live.store.create_api_key(None)
    return str(text)


def _auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def test_calls_need_a_valid_api_key(grpc_live: GrpcLive) -> None:
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


async def test_users_nodes_and_keys_round_trip(grpc_live: GrpcLive) -> None:
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


async def test_not_served_without_tls_or_allow_insecure(tmp_path: Any) -> None:
    """Headscale serves remote gRPC only with TLS or grpc_allow_insecure; so does pyheadscale."""
    from pyheadscale.app import Server
    from pyheadscale.config import build_config
    from pyheadscale.grpc.server import start_grpc

    raw = {"server_url": "http://127.0.0.1:1", "grpc_listen_addr": "127.0.0.1:1"}
    server = Server(build_config(raw, data_dir=tmp_path))
    assert await start_grpc(server) is None
