"""The OpenAPI 3.0 description of /api/v1, written by hand to match the handlers (a test holds them together).

Served at /api/v1/openapi.json without authentication, like Headscale's own document.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pyheadscale import __version__

Schema = dict[str, Any]

_STR: Schema = {"type": "string"}
_BOOL: Schema = {"type": "boolean"}
_ID: Schema = {"type": "string", "format": "uint64", "description": "64-bit id, as a decimal string"}
_TIME: Schema = {"type": "string", "format": "date-time", "nullable": True}
_STRS: Schema = {"type": "array", "items": _STR}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(**props: Schema) -> Schema:
    return {"type": "object", "properties": props}


_SCHEMAS: dict[str, Schema] = {
    "Error": _object(
        code={"type": "integer", "description": "gRPC status code"},
        message=_STR,
        details={"type": "array", "items": {"type": "object"}},
    ),
    "User": _object(
        id=_ID,
        name=_STR,
        created_at=_TIME,
        display_name=_STR,
        email=_STR,
        provider_id=_STR,
        provider=_STR,
        profile_pic_url=_STR,
    ),
    "PreAuthKey": _object(
        user={**_ref("User"), "nullable": True},
        id=_ID,
        key={"type": "string", "description": "full key only when created; masked otherwise"},
        reusable=_BOOL,
        ephemeral=_BOOL,
        used=_BOOL,
        expiration=_TIME,
        created_at=_TIME,
        acl_tags=_STRS,
    ),
    "Node": _object(
        id=_ID,
        machine_key=_STR,
        node_key=_STR,
        disco_key=_STR,
        ip_addresses=_STRS,
        name=_STR,
        user={**_ref("User"), "nullable": True},
        last_seen=_TIME,
        expiry=_TIME,
        pre_auth_key={**_ref("PreAuthKey"), "nullable": True},
        created_at=_TIME,
        register_method={
            "type": "string",
            "enum": [
                "REGISTER_METHOD_UNSPECIFIED",
                "REGISTER_METHOD_AUTH_KEY",
                "REGISTER_METHOD_CLI",
                "REGISTER_METHOD_OIDC",
            ],
        },
        given_name=_STR,
        online=_BOOL,
        approved_routes=_STRS,
        available_routes=_STRS,
        subnet_routes=_STRS,
        tags=_STRS,
    ),
    "ApiKey": _object(
        id=_ID,
        prefix={"type": "string", "description": "masked: hskey-api-<prefix>-***"},
        expiration=_TIME,
        created_at=_TIME,
        last_seen=_TIME,
    ),
}


def _param(name: str, where: str, description: str, *, required: bool = False) -> Schema:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": _STR,
        "description": description,
    }


def _op(
    op_id: str,
    summary: str,
    tag: str,
    result: Schema | None = None,
    *,
    params: list[Schema] | None = None,
    body: Schema | None = None,
) -> Schema:
    op: Schema = {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "parameters": params or [],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": result or _object()}}},
            "default": {"description": "Error", "content": {"application/json": {"schema": _ref("Error")}}},
        },
    }
    if body is not None:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    return op


_NODE_ID = _param("node_id", "path", "node id")
_ONE_USER = _object(user=_ref("User"))
_ONE_NODE = _object(node=_ref("Node"))
_KEY_BY_ID_OR_USER = _object(id=_ID, user=_STR, key={"type": "string", "description": "full or masked key"})

_PATHS: dict[str, dict[str, Schema]] = {
    "/health": {
        "get": _op(
            "health", "Health check (database connectivity)", "Health", _object(database_connectivity=_BOOL)
        )
    },
    "/user": {
        "get": _op(
            "listUsers",
            "List users",
            "Users",
            _object(users={"type": "array", "items": _ref("User")}),
            params=[
                _param("id", "query", "only this user id"),
                _param("name", "query", "only this name"),
                _param("email", "query", "only this email"),
            ],
        ),
        "post": _op(
            "createUser",
            "Create user",
            "Users",
            _ONE_USER,
            body=_object(name=_STR, display_name=_STR, email=_STR, picture_url=_STR),
        ),
    },
    "/user/{old_id}/rename/{new_name}": {
        "post": _op(
            "renameUser",
            "Rename user",
            "Users",
            _ONE_USER,
            params=[_param("old_id", "path", "user id"), _param("new_name", "path", "new user name")],
        ),
    },
    "/user/{id}": {
        "delete": _op(
            "deleteUser",
            "Delete user (it must have no nodes)",
            "Users",
            params=[_param("id", "path", "user id")],
        )
    },
    "/node": {
        "get": _op(
            "listNodes",
            "List nodes",
            "Nodes",
            _object(nodes={"type": "array", "items": _ref("Node")}),
            params=[_param("user", "query", "only this user's nodes (name or id)")],
        )
    },
    "/node/register": {
        "post": _op(
            "registerNode",
            "Complete an interactive login: register the waiting machine as the user's node",
            "Nodes",
            _ONE_NODE,
            params=[
                _param("user", "query", "user name", required=True),
                _param("key", "query", "the auth id at the end of the login URL", required=True),
            ],
        )
    },
    "/node/backfillips": {
        "post": _op(
            "backfillNodeIPs",
            "Give nodes an address in each configured family they lack",
            "Nodes",
            _object(changes={"type": "array", "items": _STR}),
            params=[_param("confirmed", "query", "must be true", required=True)],
        )
    },
    "/node/{node_id}": {
        "get": _op("getNode", "Get node", "Nodes", _ONE_NODE, params=[_NODE_ID]),
        "delete": _op("deleteNode", "Delete node", "Nodes", params=[_NODE_ID]),
    },
    "/node/{node_id}/expire": {
        "post": _op(
            "expireNode",
            "Expire node now, at `expiry`, or never (`disable_expiry`)",
            "Nodes",
            _ONE_NODE,
            params=[
                _NODE_ID,
                _param("expiry", "query", "RFC 3339 time"),
                _param("disable_expiry", "query", "true to remove expiry"),
            ],
            body=_object(expiry=_TIME, disable_expiry=_BOOL),
        )
    },
    "/node/{node_id}/rename/{new_name}": {
        "post": _op(
            "renameNode",
            "Rename node (its DNS name)",
            "Nodes",
            _ONE_NODE,
            params=[_NODE_ID, _param("new_name", "path", "new name")],
        )
    },
    "/node/{node_id}/user": {
        "post": _op(
            "moveNode",
            "Move node to another user",
            "Nodes",
            _ONE_NODE,
            params=[_NODE_ID],
            body=_object(user=_ID),
        )
    },
    "/node/{node_id}/tags": {
        "post": _op(
            "setTags", "Set node tags", "Nodes", _ONE_NODE, params=[_NODE_ID], body=_object(tags=_STRS)
        )
    },
    "/node/{node_id}/approve_routes": {
        "post": _op(
            "setApprovedRoutes",
            "Set approved routes",
            "Nodes",
            _ONE_NODE,
            params=[_NODE_ID],
            body=_object(routes=_STRS),
        )
    },
    "/preauthkey": {
        "get": _op(
            "listPreAuthKeys",
            "List preauth keys",
            "PreAuthKeys",
            _object(pre_auth_keys={"type": "array", "items": _ref("PreAuthKey")}),
            params=[_param("user", "query", "only this user's keys (id or name)")],
        ),
        "post": _op(
            "createPreAuthKey",
            "Create preauth key (the response holds the only copy of the key)",
            "PreAuthKeys",
            _object(pre_auth_key=_ref("PreAuthKey")),
            body=_object(user=_ID, reusable=_BOOL, ephemeral=_BOOL, expiration=_TIME, acl_tags=_STRS),
        ),
        "delete": _op(
            "deletePreAuthKey",
            "Delete preauth key",
            "PreAuthKeys",
            params=[
                _param("id", "query", "key id"),
                _param("user", "query", "owner (with key)"),
                _param("key", "query", "full or masked key (with user)"),
            ],
        ),
    },
    "/preauthkey/expire": {
        "post": _op("expirePreAuthKey", "Expire preauth key", "PreAuthKeys", body=_KEY_BY_ID_OR_USER)
    },
    "/apikey": {
        "get": _op(
            "listApiKeys",
            "List API keys",
            "ApiKeys",
            _object(api_keys={"type": "array", "items": _ref("ApiKey")}),
        ),
        "post": _op(
            "createApiKey",
            "Create API key (the response holds the only copy of the key)",
            "ApiKeys",
            _object(api_key=_STR),
            body=_object(expiration=_TIME),
        ),
    },
    "/apikey/expire": {
        "post": _op("expireApiKey", "Expire API key", "ApiKeys", body=_object(prefix=_STR, id=_ID))
    },
    "/apikey/{prefix}": {
        "delete": _op(
            "deleteApiKey",
            "Delete API key",
            "ApiKeys",
            params=[_param("prefix", "path", "key prefix (bare or masked)")],
        )
    },
    "/debug/node": {
        "post": _op(
            "debugCreateNode",
            "A pending login with no machine behind it, to register with auth register",
            "Debug",
            _object(node=_object(name=_STR, given_name=_STR, machine_key=_STR, node_key=_STR, auth_id=_STR)),
            body=_object(key=_STR, name=_STR, user=_STR, routes={"type": "array", "items": _STR}),
        )
    },
    "/policy": {
        "get": _op("getPolicy", "The policy in force", "Policy", _object(policy=_STR, updatedAt=_STR)),
        "put": _op(
            "setPolicy",
            "Replace the policy (policy.mode: database)",
            "Policy",
            _object(policy=_STR, updatedAt=_STR),
            body=_object(policy=_STR),
        ),
    },
    "/auth/pending": {
        "get": _op(
            "listPendingLogins",
            "Machines waiting on interactive login",
            "Auth",
            _object(
                pending={"type": "array", "items": _object(auth_id=_STR, hostname=_STR, machine_key=_STR)}
            ),
        )
    },
    "/auth/register": {
        "post": _op(
            "authRegister",
            "Register the machine waiting on auth_id as a node of user",
            "Auth",
            _ONE_NODE,
            body=_object(auth_id=_STR, user=_STR),
        )
    },
    "/auth/approve": {
        "post": _op(
            "authApprove",
            "Approve a returning machine's login; it keeps its node and owner",
            "Auth",
            _ONE_NODE,
            body=_object(auth_id=_STR),
        )
    },
    "/auth/reject": {
        "post": _op(
            "authReject",
            "Turn the machine waiting on auth_id away",
            "Auth",
            body=_object(auth_id=_STR),
        )
    },
    "/audit": {
        "get": _op(
            "listAuditEntries",
            "Recent audit log entries, oldest first",
            "Audit",
            _object(entries={"type": "array", "items": {"type": "object"}}),
            params=[
                _param("action", "query", "only this action, e.g. node.delete"),
                _param("target", "query", "only targets starting with this, e.g. node:3"),
                _param("limit", "query", "at most this many (newest), 1-10000; default 1000"),
            ],
        )
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["Meta"],
            "security": [],
            "responses": {"200": {"description": "OpenAPI document"}},
        }
    },
}


def document() -> Schema:
    """The whole document; paths are relative to the /api/v1 mount point named in `servers`."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "pyheadscale API",
            "version": __version__,
            "description": "Headscale-compatible management API. Authenticate with 'Authorization: Bearer "
            "<api key>'; errors are {code, message, details} with a gRPC status code.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
        "paths": _PATHS,
    }


async def serve_document(_request: web.Request) -> web.Response:
    return web.json_response(document())
