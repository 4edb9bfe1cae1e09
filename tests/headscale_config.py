"""The config a real Headscale (v0.29.2, built by tests/refbin.py) runs on in our labs and benchmarks.

Written with the keys of Headscale's config-example.yaml, so pyheadscale can start on the same file (the
takeover lab does). Everything stays on the machine: the embedded DERP relay is the only one (no public DERP
map), and update checks and log upload are off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def headscale_config(
    workdir: Path,
    *,
    server_url: str,
    listen_addr: str,
    metrics_listen_addr: str,
    grpc_listen_addr: str,
    stun_listen_addr: str,
    derp_ipv4: str | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """Headscale's config as a dict: keys, database and socket in `workdir`, embedded DERP with STUN on
    `stun_listen_addr` (advertised at `derp_ipv4` when given), SQLite, the policy from the database.

    `sections` replace top-level keys whole (e.g. `database=...`, `policy=...`, `dns=...`, `log=...`).
    """
    derp_server: dict[str, Any] = {
        "enabled": True,
        "region_id": 999,
        "region_code": "headscale",
        "region_name": "Headscale Embedded DERP",
        "verify_clients": True,
        "stun_listen_addr": stun_listen_addr,
        "private_key_path": str(workdir / "derp_server_private.key"),
        "automatically_add_embedded_derp_region": True,
    }
    if derp_ipv4 is not None:
        derp_server["ipv4"] = derp_ipv4
    return {
        "server_url": server_url,
        "listen_addr": listen_addr,
        "metrics_listen_addr": metrics_listen_addr,
        "grpc_listen_addr": grpc_listen_addr,
        "grpc_allow_insecure": False,
        "noise": {"private_key_path": str(workdir / "noise_private.key")},
        "prefixes": {"v4": "100.64.0.0/10", "v6": "fd7a:115c:a1e0::/48", "allocation": "sequential"},
        "derp": {
            "server": derp_server,
            "urls": [],
            "paths": [],
            "auto_update_enabled": False,
            "update_frequency": "24h",
        },
        "disable_check_updates": True,
        "database": {"type": "sqlite", "sqlite": {"path": str(workdir / "db.sqlite")}},
        "log": {"level": "info", "format": "text"},
        "policy": {"mode": "database", "path": ""},
        "dns": {
            "magic_dns": True,
            "base_domain": "tailnet.example",
            "override_local_dns": False,
            "nameservers": {"global": []},
        },
        "unix_socket": str(workdir / "headscale.sock"),
        "unix_socket_permission": "0770",
        "logtail": {"enabled": False},
    } | sections
