"""Decoding a request body inside the Noise channel, answering 400 (naming the field) when it fails."""

from __future__ import annotations

from pyheadscale.control.h2server import InnerRequest
from pyheadscale.tailcfg.requests import BadRequest, RequestT, parse_request


async def decode(request: InnerRequest, model: type[RequestT]) -> RequestT | None:
    """The body as `model`, or None once the client has been told why it was refused."""
    try:
        return parse_request(model, request.body, request.parse_context)
    except BadRequest as exc:
        await request.response.respond(400, str(exc).encode(), "text/plain")
        return None
