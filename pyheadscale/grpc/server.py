"""The remote gRPC API (`grpc_listen_addr`): headscale.v1.HeadscaleService for Headscale's own CLI and tools.

As in Headscale it is served only with TLS (`tls_cert_path`/`tls_key_path`) or when `grpc_allow_insecure`
says plaintext is acceptable, and every call needs `authorization: Bearer <api key>` metadata. The calls are
answered by the same HeadscaleService object as the REST API; its refusals become gRPC statuses with the
same code and message the REST API reports.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from pyheadscale import audit
from pyheadscale.api.errors import ApiError, from_state_error
from pyheadscale.api.gateway import python_name
from pyheadscale.auth import secret_keys
from pyheadscale.grpc.schema import SERVICE_NAME, pb
from pyheadscale.state.errors import StateError

if TYPE_CHECKING:
    from pyheadscale.app import Server

log = logging.getLogger(__name__)

Rpc = Callable[[Any], Awaitable[Any]]

MAX_REQUEST_BYTES = 1 << 20


def _authenticate(server: Server, context: aio.ServicerContext) -> str | None:
    """The refusal reason, or None with the audit actor set to the key that was presented."""
    metadata = dict(context.invocation_metadata() or ())
    scheme, _, token = str(metadata.get("authorization", "")).partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "missing API key: send 'authorization: Bearer <api key>' metadata"
    key = server.store.authenticate_api_key(token.strip()) if server.store is not None else None
    if key is None:
        parts = secret_keys.split_key(token.strip(), secret_keys.API_KEY)
        audit.actor.set(f"remote:{context.peer()}")
        if server.store is not None:
            server.store.audit.record(
                "api.authenticate",
                "grpc",
                "denied",
                reason="invalid or expired API key",
                key_prefix=parts[0] if parts else None,
            )
        return "invalid or expired API key"
    audit.actor.set(f"apikey:{key.prefix}")
    return None


def _method(server: Server, rpc: Rpc) -> Callable[[Any, aio.ServicerContext], Awaitable[Any]]:
    async def call(request: Any, context: aio.ServicerContext) -> Any:
        refusal = _authenticate(server, context)
        if refusal is not None:
            server.metrics.auth_failures.labels("apikey").inc()
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, refusal)
        try:
            return await rpc(request)
        except ApiError as exc:
            await context.abort(_status(int(exc.code)), exc.message)
        except StateError as exc:
            error = from_state_error(exc)
            await context.abort(_status(int(error.code)), error.message)

    return call


def _status(code: int) -> grpc.StatusCode:
    return next(status for status in grpc.StatusCode if status.value[0] == code)


def service_handler(server: Server) -> grpc.GenericRpcHandler:
    """Every rpc of the service, mapped onto `server.service`'s method of the same (Python) name."""
    service = pb.DESCRIPTOR.services_by_name["HeadscaleService"]
    handlers = {}
    for method in service.methods:
        request_class = getattr(pb, method.input_type.name)
        response_class = getattr(pb, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _method(server, getattr(server.service, python_name(method.name))),
            request_deserializer=request_class.FromString,
            response_serializer=response_class.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def _credentials(cert_path: Path, key_path: Path) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([(key_path.read_bytes(), cert_path.read_bytes())])


async def start_grpc(server: Server) -> aio.Server | None:
    """Listen on `grpc_listen_addr` when TLS or `grpc_allow_insecure` allows it; None when not served."""
    config = server.config
    has_tls = bool(config.tls_cert_path and config.tls_key_path)
    if not config.grpc_listen_addr or not (has_tls or config.grpc_allow_insecure):
        return None
    address = config.grpc_listen_addr
    if address.startswith(":"):
        address = "[::]" + address
    # The same bound as a REST body: no request of this API needs more.
    grpc_server = aio.server(
        options=[("grpc.max_receive_message_length", MAX_REQUEST_BYTES), ("grpc.max_concurrent_streams", 100)]
    )
    grpc_server.add_generic_rpc_handlers((service_handler(server),))
    if has_tls:
        credentials = await asyncio.to_thread(
            _credentials, config.path(config.tls_cert_path), config.path(config.tls_key_path)
        )
        port = grpc_server.add_secure_port(address, credentials)
    else:
        log.warning("gRPC is running without security (grpc_allow_insecure)")
        port = grpc_server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen for gRPC on {config.grpc_listen_addr}")
    await grpc_server.start()
    log.info("listening and serving gRPC on %s", config.grpc_listen_addr)
    return grpc_server
