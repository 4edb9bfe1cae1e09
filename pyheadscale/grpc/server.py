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
from typing import Any

import grpc
from grpc import aio

from pyheadscale import audit
from pyheadscale.api.auth import LOCAL_ACTOR, ApiKeyGuard
from pyheadscale.api.errors import ApiError, from_state_error
from pyheadscale.api.gateway import python_name
from pyheadscale.api.service import HeadscaleService
from pyheadscale.config import Config
from pyheadscale.grpc.certificates import CertificateFiles
from pyheadscale.grpc.schema import SERVICE_NAME, pb
from pyheadscale.state.errors import StateError

log = logging.getLogger(__name__)

Rpc = Callable[[Any], Awaitable[Any]]

MAX_REQUEST_BYTES = 1 << 20


def peer_address(peer: str) -> str:
    """The client's IP from gRPC's peer text (`ipv4:192.0.2.1:5000`, `ipv6:[2001:db8::1]:5000`)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition("]")[0].lstrip("[")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return peer


async def refusal(guard: ApiKeyGuard, context: aio.ServicerContext) -> tuple[grpc.StatusCode, str] | None:
    """Why the call is refused, or None with the audit actor set to the key presented: `authorization:
    Bearer <api key>` metadata, checked as the REST API checks its header (a source out of failed attempts
    is turned away with RESOURCE_EXHAUSTED before its key is looked at)."""
    source = peer_address(str(context.peer()))
    if guard.backoff(source):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, "too many failed authentications from your address"
    metadata = dict(context.invocation_metadata() or ())
    scheme, _, token = str(metadata.get("authorization", "")).partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        reason = "missing API key: send 'authorization: Bearer <api key>' metadata"
    elif await guard.verify(token) is not None:
        return None
    else:
        reason = "invalid or expired API key"
    return grpc.StatusCode.UNAUTHENTICATED, guard.refuse(source, "grpc", reason, token)


def _method(rpc: Rpc, guard: ApiKeyGuard | None) -> Callable[[Any, aio.ServicerContext], Awaitable[Any]]:
    async def call(request: Any, context: aio.ServicerContext) -> Any:
        if guard is None:
            audit.actor.set(LOCAL_ACTOR)
        else:
            refused = await refusal(guard, context)
            if refused is not None:
                await context.abort(*refused)
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


def service_handler(service: HeadscaleService, guard: ApiKeyGuard | None) -> grpc.GenericRpcHandler:
    """Every rpc of the service, mapped onto `service`'s method of the same (Python) name; with no `guard`
    (the trusted local socket) no API key is asked for."""
    descriptor = pb.DESCRIPTOR.services_by_name["HeadscaleService"]
    handlers = {}
    for method in descriptor.methods:
        request_class = getattr(pb, method.input_type.name)
        response_class = getattr(pb, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _method(getattr(service, python_name(method.name)), guard),
            request_deserializer=request_class.FromString,
            response_serializer=response_class.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def certificate_source(config: Config) -> CertificateFiles | None:
    """Where listen_addr's certificate comes from (files or ACME), for gRPC to serve the same one."""
    if config.tls_cert_path and config.tls_key_path:
        return CertificateFiles(config.path(config.tls_cert_path), config.path(config.tls_key_path))
    if config.tls_letsencrypt_hostname:
        cache = config.path(config.tls_letsencrypt_cache_dir)
        hostname = config.tls_letsencrypt_hostname
        return CertificateFiles(cache / hostname, None, fallback_hostname=hostname)
    return None


def serves_remote_grpc(config: Config) -> bool:
    """Whether `grpc_listen_addr` is served: set, and with TLS or `grpc_allow_insecure`."""
    allowed = certificate_source(config) is not None or config.grpc_allow_insecure
    return bool(config.grpc_listen_addr) and allowed


async def start_grpc(config: Config, service: HeadscaleService, guard: ApiKeyGuard) -> aio.Server | None:
    """Listen on `grpc_listen_addr` when `serves_remote_grpc`; None when not served."""
    if not serves_remote_grpc(config):
        return None
    certificates = certificate_source(config)
    address = config.grpc_listen_addr
    if address.startswith(":"):
        address = "[::]" + address
    # The same bound as a REST body: no request of this API needs more.
    grpc_server = aio.server(
        options=[("grpc.max_receive_message_length", MAX_REQUEST_BYTES), ("grpc.max_concurrent_streams", 100)]
    )
    grpc_server.add_generic_rpc_handlers((service_handler(service, guard),))
    if certificates is not None:
        credentials = await asyncio.to_thread(certificates.credentials)
        port = grpc_server.add_secure_port(address, credentials)
    else:
        log.warning("gRPC is running without security (grpc_allow_insecure)")
        port = grpc_server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen for gRPC on {config.grpc_listen_addr}")
    await grpc_server.start()
    log.info("listening and serving gRPC on %s", config.grpc_listen_addr)
    return grpc_server
