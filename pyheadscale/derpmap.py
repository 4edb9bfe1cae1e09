"""The effective DERP map: the embedded relay's region, regions from `derp.paths` files and from `derp.urls`.

Later sources override earlier ones region by region (URLs first, then files, then the embedded region), as
Headscale merges them. URL sources are fetched again every `derp.update_frequency`; a failed fetch keeps the
regions last fetched from that URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp

from pyheadscale.background import stop_task
from pyheadscale.config import Config, parse_yaml
from pyheadscale.tailcfg.derp_map import DERPMap, DERPNode, DERPRegion

log = logging.getLogger(__name__)


class DERPMapError(ValueError):
    pass


def embedded_region(config: Config) -> DERPRegion:
    """The region of the embedded relay, reached at server_url's host and port."""
    server = config.derp.server
    parts = urlsplit(config.server_url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    stun_port = int(server.stun_listen_addr.rpartition(":")[2])
    node: DERPNode = {
        "Name": str(server.region_id),
        "RegionID": server.region_id,
        "HostName": host,
        "DERPPort": port,
        "STUNPort": stun_port,
    }
    if server.ipv4:
        node["IPv4"] = server.ipv4
    elif _is_ipv4_literal(host):
        node["IPv4"] = host
    if server.ipv6:
        node["IPv6"] = server.ipv6
    return {
        "RegionID": server.region_id,
        "RegionCode": server.region_code,
        "RegionName": server.region_name,
        "Nodes": [node],
    }


def _is_ipv4_literal(host: str) -> bool:
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


def parse_derp_map(data: Any, source: str) -> dict[int, DERPRegion]:
    """Regions of a DERPMap document (tailcfg JSON, or Headscale's YAML with lower-case `regions`).

    A region's RegionID and Nodes are checked; its other fields, and its nodes', are kept as written."""
    if not isinstance(data, dict):
        raise DERPMapError(f"{source}: a DERP map must be a mapping with 'Regions'")
    regions = data.get("Regions", data.get("regions"))
    if not isinstance(regions, dict):
        raise DERPMapError(f"{source}: missing 'Regions' mapping")
    out: dict[int, DERPRegion] = {}
    for key, region in regions.items():
        if not isinstance(region, dict):
            raise DERPMapError(f"{source}: region {key!r} must be a mapping")
        normalized = {_camel(k): v for k, v in region.items()}
        try:
            region_id = int(normalized.get("RegionID") or key)
        except (TypeError, ValueError):
            raise DERPMapError(f"{source}: region {key!r} has no numeric RegionID") from None
        nodes = normalized.get("Nodes") or []
        if not isinstance(nodes, list):
            raise DERPMapError(f"{source}: region {region_id} 'Nodes' must be a list")
        normalized["RegionID"] = region_id
        normalized["Nodes"] = [{_camel(k): v for k, v in n.items()} for n in nodes if isinstance(n, dict)]
        out[region_id] = cast(DERPRegion, normalized)
    return out


_CAMEL = {
    "regionid": "RegionID",
    "regioncode": "RegionCode",
    "regionname": "RegionName",
    "nodes": "Nodes",
    "avoid": "Avoid",
    "name": "Name",
    "hostname": "HostName",
    "ipv4": "IPv4",
    "ipv6": "IPv6",
    "stunport": "STUNPort",
    "stunonly": "STUNOnly",
    "derpport": "DERPPort",
    "insecurefortests": "InsecureForTests",
    "certname": "CertName",
    "canport80": "CanPort80",
    "stuntestip": "STUNTestIP",
}


def _camel(key: str) -> str:
    return _CAMEL.get(key.lower().replace("_", ""), key)


class DERPMapSource:
    """Holds the merged map and keeps URL sources fresh; `on_change` is called when the map changes."""

    def __init__(self, config: Config, on_change: Callable[[], None] | None = None) -> None:
        self.config = config
        self.on_change = on_change
        self._from_urls: dict[str, dict[int, DERPRegion]] = {}
        self._from_files: dict[int, DERPRegion] = {}
        self.current: DERPMap = {"Regions": {}}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._from_files = await asyncio.to_thread(self._load_files)
        await self._fetch_urls()
        self._merge()
        if self.config.derp.urls and self.config.derp.auto_update_enabled:
            self._task = asyncio.get_running_loop().create_task(self._refresh_loop())

    def _load_files(self) -> dict[int, DERPRegion]:
        merged: dict[int, DERPRegion] = {}
        for path_text in self.config.derp.paths:
            path = self.config.path(path_text)
            try:
                data = parse_yaml(Path(path).read_bytes())
            except (OSError, ValueError) as exc:
                raise DERPMapError(f"derp.paths: cannot read {path}: {exc}") from None
            merged.update(parse_derp_map(data, str(path)))
        return merged

    async def _fetch_urls(self) -> None:
        if not self.config.derp.urls:
            return
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for url in self.config.derp.urls:
                try:
                    async with http.get(url) as resp:
                        resp.raise_for_status()
                        self._from_urls[url] = parse_derp_map(json.loads(await resp.read()), url)
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    log.warning("derp.urls: fetching %s failed (%s); keeping its last regions", url, exc)

    def _merge(self) -> None:
        regions: dict[int, DERPRegion] = {}
        for url in self.config.derp.urls:
            regions.update(self._from_urls.get(url, {}))
        regions.update(self._from_files)
        server = self.config.derp.server
        if server.enabled and server.automatically_add_embedded_derp_region:
            regions[server.region_id] = embedded_region(self.config)
        new_map: DERPMap = {"Regions": {str(k): regions[k] for k in sorted(regions)}}
        changed = new_map != self.current
        self.current = new_map
        if changed and self.on_change is not None:
            self.on_change()

    async def refresh(self) -> None:
        """Fetch the URL sources again and merge; a source that fails keeps its last regions."""
        await self._fetch_urls()
        self._merge()

    async def _refresh_loop(self) -> None:
        interval = max(self.config.derp.update_frequency.total_seconds(), 10.0)
        while True:
            await asyncio.sleep(interval)
            await self.refresh()

    async def close(self) -> None:
        await stop_task(self._task)
