"""Requests clients send that Headscale declares but does not implement, answered as Headscale answers them.

`/machine/set-dns` (a TXT record for an ACME DNS-01 challenge, `tailscale cert`), `/machine/id-token`
(workload identity, `tailscale debug id-token`), `/machine/whoami`, `/machine/set-device-attr` and
`/machine/audit-log`: a 501 with Headscale's text, so a client shows the same error against either server.
"""

from __future__ import annotations

from pyheadscale.control.h2server import InnerRequest
from pyheadscale.tailkey import MachinePublic

ROUTES = (
    ("POST", "/machine/set-dns"),
    ("POST", "/machine/id-token"),
    ("GET", "/machine/whoami"),
    ("PATCH", "/machine/set-device-attr"),
    ("POST", "/machine/audit-log"),
)


async def not_implemented(request: InnerRequest, _machine_key: MachinePublic) -> None:
    await request.response.respond(501, b"Not implemented yet\n", "text/plain; charset=utf-8")
