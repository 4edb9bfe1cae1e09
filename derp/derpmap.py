"""A one-region DERPMap describing a standalone server, for operators to paste into their control server.

Field names are those of Tailscale's ``tailcfg.DERPMap``/``DERPRegion``/``DERPNode`` JSON.
"""

from __future__ import annotations

from typing import Any

DEFAULT_REGION_ID = 900
"""Regions 900 and up are conventionally free for private DERP servers."""


def single_region_derpmap(
    hostname: str,
    *,
    derp_port: int,
    stun_port: int | None,
    region_id: int = DEFAULT_REGION_ID,
    region_code: str = "pyheadscale",
    region_name: str = "pyheadscale DERP",
    ipv4: str | None = None,
    ipv6: str | None = None,
    plain_http: bool = False,
) -> dict[str, Any]:
    """Build the DERPMap JSON document for one server.

    ``stun_port`` None means STUN is off (-1 on the wire; 0 would mean 3478).
    ``plain_http`` marks a server without TLS, which clients only use when
    run with ``TS_DEBUG_USE_DERP_HTTP=1``; it is for tests, never production.
    """
    node: dict[str, Any] = {
        "Name": f"{region_id}a",
        "RegionID": region_id,
        "HostName": hostname,
        "DERPPort": derp_port,
        "STUNPort": stun_port if stun_port is not None else -1,
    }
    if ipv4:
        node["IPv4"] = ipv4
    if ipv6:
        node["IPv6"] = ipv6
    if plain_http:
        node["InsecureForTests"] = True
    region = {
        "RegionID": region_id,
        "RegionCode": region_code,
        "RegionName": region_name,
        "Nodes": [node],
    }
    return {"Regions": {str(region_id): region}}
