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
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from pyheadscale import audit
from pyheadscale.api.errors import ApiError, from_state_error
from pyheadscale.api.gateway import python_name
from pyheadscale.auth import secret_keys
from pyheadscale.grpc.certificates import CertificateFiles
from pyheadscale.grpc.schema import SERVICE_NAME, pb
from pyheadscale.ratelimit import RateLimiter, source_of
from pyheadscale.state.errors import StateError

if TYPE_CHECKING:
    from pyheadscale.app import Server

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


class ApiKeyCheck:
    """`authorization: Bearer <api key>` on every call, refused as the REST API refuses: counted, audited at
    the audit log's refusal rate, and a source out of `limits.rate.api_auth_failures` tokens is turned away
    (RESOURCE_EXHAUSTED) before its key is looked at."""

    def __init__(self, server: Server) -> None:
        self.server = server
        rate = server.config.limits.rate.api_auth_failures
        self.failures = RateLimiter(
            rate.per_second,
            rate.burst,
            on_limited=server.metrics.rate_limited.labels("api_auth_failures").inc,
        )

    async def refusal(self, context: aio.ServicerContext) -> tuple[grpc.StatusCode, str] | None:
        """Why the call is refused, or None with the audit actor set to the key presented."""
        server, source = self.server, peer_address(str(context.peer()))
        if self.failures.limited(source_of(source)):
            return grpc.StatusCode.RESOURCE_EXHAUSTED, "too many failed authentications from your address"
        metadata = dict(context.invocation_metadata() or ())
        scheme, _, token = str(metadata.get("authorization", "")).partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            reason = "missing API key: send 'authorization: Bearer <api key>' metadata"
        else:
            key = await server.store.verify_api_key(token) if server.store is not None else None
            if key is not None:
                audit.actor.set(f"apikey:{key.prefix}")
                return None
            reason = "invalid or expired API key"
        server.metrics.auth_failures.labels("apikey").inc()
        self.failures.retry_after(source_of(source))
        if server.store is not None:
            parts = secret_keys.split_key(token, secret_keys.API_KEY)
            audit.actor.set(f"remote:{audit.clip(source, 64)}")
            server.store.audit.record_refusal(
                source, "api.authenticate", "grpc", reason=reason, key_prefix=parts[0] if parts else None
            )
        return grpc.StatusCode.UNAUTHENTICATED, reason


LOCAL_ACTOR = "cli:unix-socket"


def _method(
    server: Server, rpc: Rpc, check: ApiKeyCheck | None
) -> Callable[[Any, aio.ServicerContext], Awaitable[Any]]:
    async def call(request: Any, context: aio.ServicerContext) -> Any:
        if check is None:
            audit.actor.set(LOCAL_ACTOR)
        else:
            refused = await check.refusal(context)
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


def service_handler(server: Server, *, trusted: bool = False) -> grpc.GenericRpcHandler:
    """Every rpc of the service, mapped onto `server.service`'s method of the same (Python) name; `trusted`
    (the local socket) asks for no API key."""
    service = pb.DESCRIPTOR.services_by_name["HeadscaleService"]
    check = None if trusted else ApiKeyCheck(server)
    handlers = {}
    for method in service.methods:
        request_class = getattr(pb, method.input_type.name)
        response_class = getattr(pb, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _method(server, getattr(server.service, python_name(method.name)), check),
            request_deserializer=request_class.FromString,
            response_serializer=response_class.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def certificate_source(server: Server) -> CertificateFiles | None:
    """Where listen_addr's certificate comes from (files or ACME), for gRPC to serve the same one."""
    config = server.config
    if config.tls_cert_path and config.tls_key_path:
        return CertificateFiles(config.path(config.tls_cert_path), config.path(config.tls_key_path))
    if config.tls_letsencrypt_hostname:
        cache = config.path(config.tls_letsencrypt_cache_dir)
        hostname = config.tls_letsencrypt_hostname
        return CertificateFiles(cache / hostname, None, fallback_hostname=hostname)
    return None


async def start_grpc(server: Server) -> aio.Server | None:
    """Listen on `grpc_listen_addr` when TLS or `grpc_allow_insecure` allows it; None when not served."""
    config = server.config
    certificates = certificate_source(server)
    if not config.grpc_listen_addr or not (certificates is not None or config.grpc_allow_insecure):
        return None
    address = config.grpc_listen_addr
    if address.startswith(":"):
        address = "[::]" + address
    # The same bound as a REST body: no request of this API needs more.
    grpc_server = aio.server(
        options=[("grpc.max_receive_message_length", MAX_REQUEST_BYTES), ("grpc.max_concurrent_streams", 100)]
    )
    grpc_server.add_generic_rpc_handlers((service_handler(server),))
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
