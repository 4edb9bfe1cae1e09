"""Hostinfo as the store keeps it: the NetInfo part, kept when a client does not send it again."""

from __future__ import annotations

from typing import Any


def keep_netinfo(incoming: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """`incoming` Hostinfo, with the node's last NetInfo when it carries none.

    A client reports NetInfo (home DERP, latencies) only when its netcheck result changes: after a logout and
    login, or a node-key rotation, its new Hostinfo has none although nothing changed. Dropping the old one
    would leave peers without the node's home DERP, unable to reach it through a relay (Headscale keeps it
    too).
    """
    if incoming.get("NetInfo") or not current.get("NetInfo"):
        return incoming
    return {**incoming, "NetInfo": current["NetInfo"]}


def without_netinfo(hostinfo: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in hostinfo.items() if k != "NetInfo"}
