"""The HTTP mapping of headscale.v1.HeadscaleService, as Headscale's grpc-gateway serves it under /api/v1.

Each binding names a verb, a path template and the rpc it calls. A request message is built the way the
gateway builds it: from the JSON body when the binding takes one (`body: "*"`), else from the query string,
with path parameters on top; the rpc's response message is written back as protojson. The same service
object answers gRPC (pyheadscale/grpc/server.py), so both APIs behave alike by construction.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from pyheadscale.api.errors import invalid
from pyheadscale.api.params import json_body
from pyheadscale.api.protojson import Json, from_json, to_json
from pyheadscale.grpc.schema import pb

Rpc = Callable[[Any], Awaitable[Any]]

_INTEGER_TYPES = frozenset({FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_UINT32})
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


@dataclass(frozen=True, slots=True)
class Binding:
    method: str
    path: str
    rpc: str
    body: bool = False


BINDINGS = (
    Binding("POST", "/user", "CreateUser", body=True),
    Binding("POST", "/user/{old_id}/rename/{new_name}", "RenameUser"),
    Binding("DELETE", "/user/{id}", "DeleteUser"),
    Binding("GET", "/user", "ListUsers"),
    Binding("POST", "/preauthkey", "CreatePreAuthKey", body=True),
    Binding("POST", "/preauthkey/expire", "ExpirePreAuthKey", body=True),
    Binding("DELETE", "/preauthkey", "DeletePreAuthKey"),
    Binding("GET", "/preauthkey", "ListPreAuthKeys"),
    Binding("POST", "/debug/node", "DebugCreateNode", body=True),
    Binding("GET", "/node/{node_id}", "GetNode"),
    Binding("POST", "/node/{node_id}/tags", "SetTags", body=True),
    Binding("POST", "/node/{node_id}/approve_routes", "SetApprovedRoutes", body=True),
    Binding("POST", "/node/register", "RegisterNode"),
    Binding("DELETE", "/node/{node_id}", "DeleteNode"),
    Binding("POST", "/node/{node_id}/expire", "ExpireNode"),
    Binding("POST", "/node/{node_id}/rename/{new_name}", "RenameNode"),
    Binding("GET", "/node", "ListNodes"),
    Binding("POST", "/node/backfillips", "BackfillNodeIPs"),
    Binding("POST", "/auth/register", "AuthRegister", body=True),
    Binding("POST", "/auth/approve", "AuthApprove", body=True),
    Binding("POST", "/auth/reject", "AuthReject", body=True),
    Binding("POST", "/apikey", "CreateApiKey", body=True),
    Binding("POST", "/apikey/expire", "ExpireApiKey", body=True),
    Binding("GET", "/apikey", "ListApiKeys"),
    Binding("DELETE", "/apikey/{prefix}", "DeleteApiKey"),
    Binding("GET", "/policy", "GetPolicy"),
    Binding("PUT", "/policy", "SetPolicy", body=True),
    Binding("POST", "/policy/check", "CheckPolicy", body=True),
    Binding("GET", "/health", "Health"),
)


def python_name(rpc: str) -> str:
    """The service method answering `rpc`: `BackfillNodeIPs` -> `backfill_node_ips`."""
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", rpc).lower()


def request_descriptor(rpc: str) -> Descriptor:
    method = pb.DESCRIPTOR.services_by_name["HeadscaleService"].methods_by_name[rpc]
    descriptor: Descriptor = method.input_type
    return descriptor


def _query_value(field: FieldDescriptor, text: str) -> Any:
    if field.type != FieldDescriptor.TYPE_BOOL:
        return text
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise invalid(f"query parameter {field.json_name}: {text[:40]!r} is not a boolean")


def _from_path(descriptor: Descriptor, request: web.Request) -> Json:
    """Path parameters; a malformed number is refused the way the gateway words it."""
    values: Json = dict(request.match_info)
    for name, text in values.items():
        field = descriptor.fields_by_name[name]
        if field.type in _INTEGER_TYPES and not (text.isascii() and text.isdigit() and int(text) < 1 << 64):
            raise invalid(
                f"type mismatch, parameter: {name}, error: {text[:40]!r} is not an unsigned integer"
            )
    return values


def _from_query(descriptor: Descriptor, request: web.Request) -> Json:
    """Top-level fields from the query string, by proto or JSON name; unknown names are ignored."""
    by_name = {f.name: f for f in descriptor.fields} | {f.json_name: f for f in descriptor.fields}
    values: Json = {}
    for name in request.query:
        field = by_name.get(name)
        if field is None or (field.message_type is not None and field.message_type.name != "Timestamp"):
            continue
        items = [_query_value(field, text) for text in request.query.getall(name)]
        values[field.name] = items if field.is_repeated else items[-1]
    return values


def handler(binding: Binding, rpc: Rpc) -> Callable[[web.Request], Awaitable[web.Response]]:
    descriptor = request_descriptor(binding.rpc)
    message_class = getattr(pb, descriptor.name)

    async def handle(request: web.Request) -> web.Response:
        values = await json_body(request) if binding.body else _from_query(descriptor, request)
        values.update(_from_path(descriptor, request))
        response = await rpc(from_json(values, message_class))
        return web.json_response(to_json(response))

    return handle


def routes(service: object) -> list[web.RouteDef]:
    """Every binding as an aiohttp route onto `service`'s method of the rpc's Python name."""
    return [
        web.route(b.method, b.path, handler(b, getattr(service, python_name(b.rpc))), name=python_name(b.rpc))
        for b in BINDINGS
    ]
