"""The CLI's remote transport when HEADSCALE_CLI_ADDRESS is `host:port`, as Headscale's CLI reads it: the
headscale.v1 gRPC API over TLS, with the API key as `authorization: Bearer` metadata.

`HEADSCALE_CLI_INSECURE=true` keeps TLS but trusts whatever certificate the server presents (Headscale's CLI
skips verification the same way): the certificate is fetched first and pinned for the connection.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID
from grpc import aio

from pyheadscale.api.errors import ApiError
from pyheadscale.api.protojson import from_json
from pyheadscale.grpc.schema import SERVICE_NAME, pb

TIMEOUT_SECONDS = 30.0


class GrpcError(Exception):
    """A call that failed; the message is the server's (or says the server could not be reached)."""


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise GrpcError(f"HEADSCALE_CLI_ADDRESS {address!r} is not host:port (or an http(s):// URL for REST)")
    return host.strip("[]"), int(port)


def _name_in(pem: str) -> str | None:
    """A name the certificate is valid for, to check it against instead of the address we dialled."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        for name in san.get_values_for_type(x509.DNSName):
            return str(name)
        for ip in san.get_values_for_type(x509.IPAddress):
            return str(ip)
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(common[0].value) if common else None


class GrpcTransport:
    def __init__(self, address: str, api_key: str, *, insecure: bool) -> None:
        self.address = address
        self.api_key = api_key
        self.insecure = insecure
        self._channel: aio.Channel | None = None

    async def _open(self) -> aio.Channel:
        if self._channel is not None:
            return self._channel
        options: list[tuple[str, Any]] = []
        if self.insecure:
            host, port = _split(self.address)
            try:
                pem = await asyncio.to_thread(
                    ssl.get_server_certificate, (host, port), timeout=TIMEOUT_SECONDS
                )
            except OSError as exc:
                raise GrpcError(f"cannot reach {self.address}: {exc}") from None
            credentials = grpc.ssl_channel_credentials(root_certificates=pem.encode())
            name = await asyncio.to_thread(_name_in, pem)
            if name is not None:
                options.append(("grpc.ssl_target_name_override", name))
        else:
            credentials = grpc.ssl_channel_credentials()
        self._channel = aio.secure_channel(self.address, credentials, options=options)
        return self._channel

    async def call(self, rpc: str, fields: dict[str, Any]) -> Any:
        method = pb.DESCRIPTOR.services_by_name["HeadscaleService"].methods_by_name[rpc]
        request_class = getattr(pb, method.input_type.name)
        response_class = getattr(pb, method.output_type.name)
        try:
            request = from_json(fields, request_class)
        except ApiError as exc:
            raise GrpcError(exc.message) from None
        stub = (await self._open()).unary_unary(
            f"/{SERVICE_NAME}/{rpc}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        try:
            return await stub(
                request, metadata=(("authorization", f"Bearer {self.api_key}"),), timeout=TIMEOUT_SECONDS
            )
        except aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise GrpcError(f"cannot reach {self.address}: {exc.details()}") from None
            raise GrpcError(str(exc.details())) from None

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
