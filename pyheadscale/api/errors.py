"""API errors in Headscale's JSON shape: `{"code": <gRPC code>, "message": ..., "details": []}`.

Headscale's v1 API grew out of grpc-gateway, so clients (and our CLI) read a gRPC status code next to the
HTTP status. Handlers raise `ApiError` (or let a store `StateError` escape); the middleware here turns every
failure, including aiohttp's own 404/405 and anything unexpected, into that shape, so no request ever gets a
traceback or an HTML page.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from enum import IntEnum

from aiohttp import web

from pyheadscale.state.errors import AuthFailed, Conflict, NotFound, StateError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class GrpcCode(IntEnum):
    """The gRPC status codes Headscale's gateway reports, with the HTTP status it pairs them with."""

    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    FAILED_PRECONDITION = 9
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAUTHENTICATED = 16

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self]


_HTTP_STATUS = {
    GrpcCode.INVALID_ARGUMENT: 400,
    GrpcCode.NOT_FOUND: 404,
    GrpcCode.ALREADY_EXISTS: 409,
    GrpcCode.PERMISSION_DENIED: 403,
    GrpcCode.FAILED_PRECONDITION: 400,
    GrpcCode.UNIMPLEMENTED: 501,
    GrpcCode.INTERNAL: 500,
    GrpcCode.UNAUTHENTICATED: 401,
}


class ApiError(Exception):
    """A request failure with a message meant for the caller."""

    def __init__(self, code: GrpcCode, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or code.http_status


def invalid(message: str) -> ApiError:
    return ApiError(GrpcCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ApiError:
    return ApiError(GrpcCode.NOT_FOUND, message)


def unauthenticated(message: str) -> ApiError:
    return ApiError(GrpcCode.UNAUTHENTICATED, message)


def from_state_error(exc: StateError) -> ApiError:
    """Map the store's refusal onto a status: unknown 404, duplicate 409, anything else invalid input."""
    if isinstance(exc, NotFound):
        return ApiError(GrpcCode.NOT_FOUND, str(exc))
    if isinstance(exc, Conflict):
        return ApiError(GrpcCode.ALREADY_EXISTS, str(exc))
    if isinstance(exc, AuthFailed):
        return ApiError(GrpcCode.UNAUTHENTICATED, str(exc))
    return ApiError(GrpcCode.INVALID_ARGUMENT, str(exc))


def error_response(error: ApiError) -> web.Response:
    body = {"code": int(error.code), "message": error.message, "details": []}
    return web.json_response(body, status=error.status)


def _from_http(exc: web.HTTPException) -> ApiError:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"method {exc.method} not allowed here (allowed: {allowed})"
        return ApiError(GrpcCode.UNIMPLEMENTED, message, status=405)
    if isinstance(exc, web.HTTPNotFound):
        return ApiError(GrpcCode.NOT_FOUND, "no such API endpoint")
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return invalid("request body too large")
    return invalid(exc.reason)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as a JSON error; the unexpected are logged with the stack and reported as 500."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except StateError as exc:
        return error_response(from_state_error(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_from_http(exc))
    except Exception:
        log.exception("API %s %s failed", request.method, request.path)
        return error_response(ApiError(GrpcCode.INTERNAL, "internal error; see the server log"))
