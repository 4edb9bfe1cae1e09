"""The Swagger 2.0 description of /api/v1, derived from the headscale.v1 messages and the gateway bindings.

Nothing here is written per field: definitions come from the message descriptors (JSON names, 64-bit ids as
strings, Timestamps as date-time, enums by name), operations from gateway.BINDINGS, so the document cannot
drift from what is served. pyheadscale's own additions are described at the end. Served without
authentication at /swagger/v1/openapiv2.json (Headscale's address) and /api/v1/openapi.json.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from pyheadscale import __version__
from pyheadscale.api.gateway import BINDINGS, Binding, request_descriptor
from pyheadscale.grpc.schema import pb

Schema = dict[str, Any]

_SCALARS: dict[int, Schema] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_TIME: Schema = {"type": "string", "format": "date-time"}
_ERROR: Schema = {
    "type": "object",
    "properties": {
        "code": {"type": "integer", "format": "int32"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}},
    },
}


def _name(descriptor: Any) -> str:
    return "v1" + descriptor.name


def _field_schema(field: FieldDescriptor, definitions: dict[str, Schema]) -> Schema:
    if field.message_type is not None:
        if field.message_type.full_name == "google.protobuf.Timestamp":
            schema: Schema = dict(_TIME)
        else:
            _define(field.message_type, definitions)
            schema = {"$ref": f"#/definitions/{_name(field.message_type)}"}
    elif field.enum_type is not None:
        enum = field.enum_type
        definitions[_name(enum)] = {
            "type": "string",
            "enum": [value.name for value in enum.values],
            "default": enum.values[0].name,
        }
        schema = {"$ref": f"#/definitions/{_name(enum)}"}
    else:
        schema = dict(_SCALARS[field.type])
    return {"type": "array", "items": schema} if field.is_repeated else schema


def _define(
    descriptor: Descriptor, definitions: dict[str, Schema], skip: frozenset[str] = frozenset()
) -> str:
    name = _name(descriptor)
    if name not in definitions:
        definitions[name] = {"type": "object"}
        properties = {
            f.json_name: _field_schema(f, definitions) for f in descriptor.fields if f.name not in skip
        }
        definitions[name] = {"type": "object", "properties": properties}
    return name


def _response_descriptor(rpc: str) -> Descriptor:
    method = pb.DESCRIPTOR.services_by_name["HeadscaleService"].methods_by_name[rpc]
    descriptor: Descriptor = method.output_type
    return descriptor


def _responses(ok: Schema) -> Schema:
    return {
        "200": {"description": "A successful response.", "schema": ok},
        "default": {
            "description": "An unexpected error response.",
            "schema": {"$ref": "#/definitions/rpcStatus"},
        },
    }


def _operation(binding: Binding, definitions: dict[str, Schema]) -> tuple[str, Schema]:
    descriptor = request_descriptor(binding.rpc)
    path_names = re.findall(r"{(\w+)}", binding.path)
    parameters: list[Schema] = []
    for name in path_names:
        field = descriptor.fields_by_name[name]
        parameters.append({"name": field.json_name, "in": "path", "required": True, **_SCALARS[field.type]})
    if binding.body:
        skip = frozenset(path_names)
        if path_names:
            body_name = f"HeadscaleService{binding.rpc}Body"
            definitions[body_name] = {
                "type": "object",
                "properties": {
                    f.json_name: _field_schema(f, definitions)
                    for f in descriptor.fields
                    if f.name not in skip
                },
            }
        else:
            body_name = _define(descriptor, definitions)
        parameters.append(
            {"name": "body", "in": "body", "required": True, "schema": {"$ref": f"#/definitions/{body_name}"}}
        )
    else:
        for field in descriptor.fields:
            if field.name in path_names:
                continue
            schema = _field_schema(field, definitions)
            if schema.get("type") == "array":
                schema = {**schema, "collectionFormat": "multi"}
            parameters.append({"name": field.json_name, "in": "query", "required": False, **schema})
    path = "/api/v1" + re.sub(
        r"{(\w+)}", lambda m: "{" + descriptor.fields_by_name[m[1]].json_name + "}", binding.path
    )
    ok = {"$ref": f"#/definitions/{_define(_response_descriptor(binding.rpc), definitions)}"}
    operation: Schema = {
        "operationId": f"HeadscaleService_{binding.rpc}",
        "responses": _responses(ok),
        "tags": ["HeadscaleService"],
    }
    if parameters:
        operation["parameters"] = parameters
    return path, operation


def _additions() -> dict[str, dict[str, Schema]]:
    """pyheadscale's routes beyond Headscale's, with loosely described answers."""
    obj: Schema = {"type": "object"}
    node_id = {"name": "nodeId", "in": "path", "required": True, "type": "string", "format": "uint64"}
    return {
        "/api/v1/node/{nodeId}/user": {
            "post": {
                "operationId": "pyheadscale_MoveNode",
                "summary": 'Move a node to another user (body: {"user": <user id>}).',
                "parameters": [node_id, {"name": "body", "in": "body", "required": True, "schema": obj}],
                "responses": _responses({"$ref": "#/definitions/v1GetNodeResponse"}),
                "tags": ["pyheadscale"],
            }
        },
        "/api/v1/node/{nodeId}/rename/": {
            "post": {
                "operationId": "pyheadscale_RenameNodeToHostname",
                "summary": "RenameNode with an empty name: the node is named after its hostname again.",
                "parameters": [node_id],
                "responses": _responses({"$ref": "#/definitions/v1RenameNodeResponse"}),
                "tags": ["pyheadscale"],
            }
        },
        "/api/v1/auth/pending": {
            "get": {
                "operationId": "pyheadscale_ListPendingLogins",
                "summary": "Logins waiting for approval: {pending: [{authId, hostname, machineKey}]}.",
                "responses": _responses(obj),
                "tags": ["pyheadscale"],
            }
        },
        "/api/v1/audit": {
            "get": {
                "operationId": "pyheadscale_ListAudit",
                "summary": "Recent audit entries: {entries: [...]}, filtered by action and target.",
                "parameters": [
                    {"name": "action", "in": "query", "required": False, "type": "string"},
                    {"name": "target", "in": "query", "required": False, "type": "string"},
                    {"name": "limit", "in": "query", "required": False, "type": "integer"},
                ],
                "responses": _responses(obj),
                "tags": ["pyheadscale"],
            }
        },
    }


def document() -> Schema:
    definitions: dict[str, Schema] = {"rpcStatus": _ERROR}
    paths: dict[str, dict[str, Schema]] = {}
    for binding in BINDINGS:
        path, operation = _operation(binding, definitions)
        paths.setdefault(path, {})[binding.method.lower()] = operation
    paths.update(_additions())
    return {
        "swagger": "2.0",
        "info": {"title": "headscale/v1/headscale.proto", "version": f"pyheadscale {__version__}"},
        "tags": [{"name": "HeadscaleService"}],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "paths": paths,
        "definitions": dict(sorted(definitions.items())),
    }


async def serve_document(_request: web.Request) -> web.Response:
    return web.json_response(document())
